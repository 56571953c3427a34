// Run as an unprivileged user (setpriv) to play the parts a broker's clients
// play: "helper" makes a socketpair as QEMU does, runs the helper with one end
// as fd 3 and reports what came back (exit code, stderr, the JSON reply of
// the extended protocol, and what each received fd really is); "burst" sends
// many broker requests at once and reports each answer.
// Prints one JSON line on stdout.
import { spawn } from 'node:child_process';
import { readFileSync, readlinkSync } from 'node:fs';
import { askBroker } from '../../src/broker/client.js';
import type { BrokerRequest } from '../../src/broker/protocol.js';
import { closeFd } from '../../src/sys/libc.js';
import { recvWithFds, socketPair } from '../../src/sys/unix-fd.js';
import { BIN } from './paths.js';

type Job =
  | { kind: 'helper'; args: string[]; env: NodeJS.ProcessEnv }
  | { kind: 'burst'; socket: string; requests: BrokerRequest[] };

async function helper(job: Extract<Job, { kind: 'helper' }>): Promise<unknown> {
  const [ours, theirs] = socketPair();
  const child = spawn(process.execPath, [BIN, ...job.args.map((a) => a.replace('{FD}', '3'))], { stdio: ['ignore', 'pipe', 'pipe', theirs], env: job.env });
  closeFd(theirs);
  let stderr = '';
  let stdout = '';
  child.stderr!.setEncoding('utf8').on('data', (d: string) => { stderr += d; });
  child.stdout!.setEncoding('utf8').on('data', (d: string) => { stdout += d; });
  const code = await new Promise<number | null>((r) => child.once('exit', (c) => r(c)));
  const buf = Buffer.alloc(8192);
  let text = '';
  let fds: number[] = [];
  try {
    const r = recvWithFds(ours, buf, 0, buf.length, 0x40 /* MSG_DONTWAIT */);
    text = buf.subarray(0, r.n).toString('latin1');
    fds = r.fds;
  } catch { /* nothing sent */ }
  closeFd(ours);
  const targets = fds.map((fd) => { try { return readlinkSync(`/proc/self/fd/${fd}`); } catch { return '?'; } });
  const iff = fds.map((fd) => {
    try { return /^iff:\s*(\S+)/m.exec(readFileSync(`/proc/self/fdinfo/${fd}`, 'utf8'))?.[1] ?? null; } catch { return null; }
  });
  for (const fd of fds) closeFd(fd);
  return { code, stderr, stdout, text, targets, iff };
}

/** All requests at once, each on its own connection; the replies in request order. */
async function burst(job: Extract<Job, { kind: 'burst' }>): Promise<unknown> {
  return Promise.all(job.requests.map(async (req) => {
    try {
      return await askBroker(req, job.socket);
    } catch (e) {
      return { v: 1, ok: false, exit: -1, error: (e as Error).message };
    }
  }));
}

const job = JSON.parse(process.argv[2]!) as Job;
const out = job.kind === 'helper' ? await helper(job) : await burst(job);
process.stdout.write(JSON.stringify(out) + '\n');
