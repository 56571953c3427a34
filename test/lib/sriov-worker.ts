// One claimant process for the SR-IOV e2e tests, playing both the helper
// (it runs the backend's setup) and QEMU (it is the recorded owner and keeps
// the claim alive while it runs). Driven by one JSON argument and stdin lines:
//   stdout: {"ready":true} once loaded (when job.waitGo), then one result line
//   stdin:  "go" starts the claim (when job.waitGo); after a win, "release"
//           releases and exits 0, "exit" or EOF exits without releasing.
// A lost claim exits with the error's exit code, like the helper.
import { spawn, type ChildProcess } from 'node:child_process';
import { createInterface } from 'node:readline';
import { fileURLToPath } from 'node:url';
import { gcStaleVfClaims, sriovBackend } from '../../src/backends/kernel/sriov.js';
import type { EndpointRequest, HostContext, OwnedObject } from '../../src/backends/types.js';
import { describeError } from '../../src/errors.js';
import { parseMac } from '../../src/net/mac.js';
import { Rollback } from '../../src/state/rollback.js';
import type { NetNs } from './netns.js';

export interface WorkerJob {
  op: 'setup' | 'release' | 'gc';
  sysfsRoot: string;
  stateDir: string;
  dev?: string;
  vfPool?: string[];
  mac?: string;
  vlan?: number;
  spoofchk?: boolean;
  params?: Record<string, unknown>;
  /** op 'release': the owned object to release. */
  owned?: OwnedObject;
  waitGo?: boolean;
  /** After a win, stay alive (holding the claim) until told otherwise. */
  hold?: boolean;
}

/** Lines of a stream, one promise per line; null at the end. */
function lineReader(input: NodeJS.ReadableStream): () => Promise<string | null> {
  const queue: (string | null)[] = [];
  let waiter: ((l: string | null) => void) | null = null;
  const push = (l: string | null): void => { if (waiter) { const w = waiter; waiter = null; w(l); } else queue.push(l); };
  const rl = createInterface({ input });
  rl.on('line', (l) => push(l.trim()));
  rl.on('close', () => push(null));
  return () => (queue.length ? Promise.resolve(queue.shift()!) : new Promise((res) => { waiter = res; }));
}

// ------------------------------------------------------------ test side

const WORKER = fileURLToPath(import.meta.url);

export interface WorkerHandle {
  child: ChildProcess;
  pid: number;
  /** The next JSON line the worker printed; null once it closed stdout. */
  next(): Promise<Record<string, any> | null>;
  send(line: string): void;
  exited: Promise<number | null>;
  stderr(): string;
}

const live = new Set<ChildProcess>();

/** SIGKILLs every worker started here that still runs (test clean-up after a failure). */
export function killAllWorkers(): void {
  for (const ch of live) if (ch.exitCode === null && ch.signalCode === null) ch.kill('SIGKILL');
  live.clear();
}

/** Starts a worker inside `ns` (`ip netns exec` execs node, so the pid is node's). */
export function startWorker(ns: NetNs, job: WorkerJob, env: NodeJS.ProcessEnv = {}): WorkerHandle {
  const child = spawn('ip', ['netns', 'exec', ns.name, process.execPath, WORKER, JSON.stringify(job)], { stdio: ['pipe', 'pipe', 'pipe'], env: { ...process.env, ...env } });
  live.add(child);
  child.once('exit', () => live.delete(child));
  let err = '';
  child.stderr!.setEncoding('utf8').on('data', (d: string) => { err += d; });
  const exited = new Promise<number | null>((res) => child.once('exit', (code) => res(code)));
  const read = lineReader(child.stdout!);
  return {
    child, pid: child.pid!, exited, stderr: () => err,
    next: async () => { const l = await read(); return l === null ? null : JSON.parse(l) as Record<string, any>; },
    send: (line) => { if (child.stdin!.writable) child.stdin!.write(`${line}\n`); },
  };
}

// ---------------------------------------------------------- worker side

const say = (o: unknown): void => { process.stdout.write(`${JSON.stringify(o)}\n`); };

function fail(e: unknown): never {
  const d = describeError(e);
  say({ ok: false, exitCode: d.exitCode, line: d.line });
  process.exit(d.exitCode);
}

async function main(job: WorkerJob): Promise<void> {
  const host: HostContext = {
    bin: { nft: null, dnsmasq: null }, trusted: true, switchControl: '/nonexistent', sysfsRoot: job.sysfsRoot, netSysfsRoot: '/sys', stateDir: job.stateDir,
    tunDevice: '/dev/net/tun', vhostNetDevice: '/dev/vhost-net', netAdmin: true,
  };
  const nextLine = lineReader(process.stdin);
  if (job.op === 'gc') {
    say({ ok: true, gc: gcStaleVfClaims(host) });
    process.exit(0);
  }
  if (job.op === 'release') {
    try { sriovBackend.release(job.owned!, host); } catch (e) { fail(e); }
    say({ ok: true, released: true });
    process.exit(0);
  }
  const req: EndpointRequest = {
    mode: 'passthrough', vnetHdr: false, queues: 1,
    params: { ownerPid: process.pid, endpointId: `worker-${process.pid}`, ...job.params },
  };
  if (job.dev) req.dev = job.dev;
  if (job.vfPool) req.vfPool = job.vfPool;
  if (job.mac) req.mac = parseMac(job.mac)!;
  if (job.vlan !== undefined) req.vlan = job.vlan;
  if (job.spoofchk !== undefined) req.spoofchk = job.spoofchk;
  if (job.waitGo) {
    say({ ready: true });
    if ((await nextLine()) !== 'go') process.exit(99);
  }
  const rb = new Rollback();
  let ep;
  try {
    ep = sriovBackend.setup(req, host, rb);
    rb.commit();
  } catch (e) {
    rb.undoAllSync();
    fail(e);
  }
  say({ ok: true, pid: process.pid, ifname: ep.ifname, mac: ep.mac, info: ep.info, owned: ep.owned });
  if (!job.hold) process.exit(0);
  for (;;) {
    const l = await nextLine();
    if (l === 'release') {
      try { for (const o of ep.owned) sriovBackend.release(o, host); } catch (e) { fail(e); }
      say({ released: true });
      process.exit(0);
    }
    if (l === null || l === 'exit') process.exit(0);
  }
}

if (process.argv[1] === WORKER) void main(JSON.parse(process.argv[2] ?? '{}') as WorkerJob);
