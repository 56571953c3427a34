// Run as an unprivileged user (setpriv) to attack a broker or to time it from
// another user's side: "stuffed" fills QEMU's socket before running the helper
// (the broker's send of the tap fd finds it full); "flood" keeps many
// connections open, opening a new one whenever the broker closes one;
// "timed" sends requests one after another and reports each answer and how
// long it took. Prints one JSON line on stdout.
import { spawn } from 'node:child_process';
import { connect, type Socket } from 'node:net';
import { askBroker } from '../../src/broker/client.js';
import type { BrokerRequest } from '../../src/broker/protocol.js';
import { closeFd } from '../../src/sys/libc.js';
import { sendWithFds, socketPair } from '../../src/sys/unix-fd.js';
import { BIN } from './paths.js';

type Job =
  | { kind: 'stuffed'; args: string[]; env: NodeJS.ProcessEnv }
  | { kind: 'flood'; socket: string; connections: number; seconds: number }
  | { kind: 'timed'; socket: string; requests: BrokerRequest[]; gapMs?: number };

async function stuffed(job: Extract<Job, { kind: 'stuffed' }>): Promise<unknown> {
  const [ours, theirs] = socketPair();
  // Fill what `ours` can receive: the broker's send on `theirs` then finds no room.
  const chunk = Buffer.alloc(65536);
  let queued = 0;
  for (;;) {
    try { queued += sendWithFds(theirs, chunk, [], 0x40 /* MSG_DONTWAIT */); } catch { break; }
  }
  const t0 = Date.now();
  const child = spawn(process.execPath, [BIN, ...job.args], { stdio: ['ignore', 'ignore', 'pipe', theirs], env: job.env });
  closeFd(theirs);
  let stderr = '';
  child.stderr!.setEncoding('utf8').on('data', (d: string) => { stderr += d; });
  const code = await new Promise<number | null>((r) => child.once('exit', (c) => r(c)));
  closeFd(ours);
  return { code, stderr, ms: Date.now() - t0, queued };
}

async function flood(job: Extract<Job, { kind: 'flood' }>): Promise<unknown> {
  const end = Date.now() + job.seconds * 1000;
  let opened = 0;
  let closedByBroker = 0;
  let refusedLines = 0;
  let errors = 0;
  const open = (): void => {
    if (Date.now() >= end) return;
    opened++;
    const s: Socket = connect(job.socket);
    s.setEncoding('utf8');
    s.on('data', (d: string) => { if (d.includes('"exit":9')) refusedLines++; });
    s.on('error', () => { errors++; });
    // Half-open: connected, never a request; re-opened as soon as the broker lets go.
    s.on('close', () => { closedByBroker++; setTimeout(open, 1); });
  };
  for (let i = 0; i < job.connections; i++) open();
  await new Promise((r) => setTimeout(r, job.seconds * 1000));
  return { opened, closedByBroker, refusedLines, errors };
}

async function timed(job: Extract<Job, { kind: 'timed' }>): Promise<unknown> {
  const out: { ms: number; ok: boolean; exit: number; error?: string }[] = [];
  for (const req of job.requests) {
    const t0 = performance.now();
    try {
      const r = await askBroker(req, job.socket, 60_000);
      out.push({ ms: performance.now() - t0, ok: r.ok, exit: r.exit, ...(r.ok ? {} : { error: r.error }) });
    } catch (e) {
      out.push({ ms: performance.now() - t0, ok: false, exit: -1, error: (e as Error).message });
    }
    if (job.gapMs) await new Promise((r) => setTimeout(r, job.gapMs));
  }
  return out;
}

const job = JSON.parse(process.argv[2]!) as Job;
const out = job.kind === 'stuffed' ? await stuffed(job) : job.kind === 'flood' ? await flood(job) : await timed(job);
process.stdout.write(JSON.stringify(out) + '\n');
process.exit(0);
