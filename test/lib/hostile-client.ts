// Run as an unprivileged user (setpriv) to attack a broker or to time it from
// another user's side: "stuffed" fills QEMU's socket before running the helper
// (the broker's send of the tap fd finds it full); "flood" keeps many
// connections open, opening a new one whenever the broker closes one;
// "timed" sends requests one after another and reports each answer and how
// long it took; "tenant" makes helper requests in-process (QEMU's socketpair
// made here, the tap fd received and dropped) and lists, timing each; "attack"
// runs the attacks above in a loop for a while. Prints one JSON line on stdout.
import { spawn } from 'node:child_process';
import { closeSync, openSync } from 'node:fs';
import { connect, type Socket } from 'node:net';
import { askBroker } from '../../src/broker/client.js';
import type { BrokerRequest } from '../../src/broker/protocol.js';
import { closeFd, waitReadableSync } from '../../src/sys/libc.js';
import { recvWithFds, sendWithFds, socketPair } from '../../src/sys/unix-fd.js';
import { BIN } from './paths.js';

type Job =
  | { kind: 'stuffed'; args: string[]; env: NodeJS.ProcessEnv }
  | { kind: 'file-fd'; path: string; args: string[]; env: NodeJS.ProcessEnv }
  | { kind: 'flood'; socket: string; connections: number; seconds: number }
  | { kind: 'timed'; socket: string; requests: BrokerRequest[]; gapMs?: number }
  | { kind: 'tenant'; socket: string; bridge: string; count: number; gapMs?: number }
  | { kind: 'attack'; socket: string; bridge: string; seconds: number };

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

/**
 * Runs the helper with `path` open as its fd 3, the file's FUSE server
 * stalled by the test meanwhile: a shell holds the fd (not close-on-exec) and
 * execs the helper only once told, so no exec closes a file of the stalled
 * server (that close would wait for it, holding the exec lock every /proc
 * reader of that process needs). Says "opened" on stderr, waits for a line.
 */
async function fileFd(job: Extract<Job, { kind: 'file-fd' }>): Promise<unknown> {
  const fd = openSync(job.path, 'r');
  const t0 = Date.now();
  const child = spawn('sh', ['-c', 'read go; exec "$0" "$@"', process.execPath, BIN, ...job.args], { stdio: ['pipe', 'ignore', 'pipe', fd], env: job.env });
  closeSync(fd);
  let stderr = '';
  child.stderr!.setEncoding('utf8').on('data', (d: string) => { stderr += d; });
  await new Promise((r) => setTimeout(r, 500));
  process.stderr.write('opened\n');
  process.stdin.once('data', () => child.stdin!.end('go\n'));
  const code = await new Promise<number | null>((r) => child.once('exit', (c) => r(c)));
  return { code, stderr, ms: Date.now() - t0 };
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

/** QEMU's part done in this process: a socketpair, the broker asked for --fd of one end, the tap fd read from the other. */
async function helperRequest(socket: string, bridge: string, fill: boolean): Promise<{ ms: number; exit: number; gotFd: boolean; error?: string }> {
  const [ours, theirs] = socketPair();
  if (fill) {
    const chunk = Buffer.alloc(65536);
    for (;;) { try { sendWithFds(theirs, chunk, [], 0x40); } catch { break; } }
  }
  const t0 = performance.now();
  let exit = -1;
  let error: string | undefined;
  try {
    const r = await askBroker({ v: 1, op: 'helper', argv: [`--fd=${theirs}`, `--br=${bridge}`] }, socket, 60_000);
    exit = r.exit;
    if (!r.ok) error = r.error;
  } catch (e) { error = (e as Error).message; }
  const ms = performance.now() - t0;
  let gotFd = false;
  if (exit === 0 && waitReadableSync(ours, 5000)) {
    const r = recvWithFds(ours, Buffer.alloc(16));
    gotFd = r.n === 1 && r.fds.length === 1;
    for (const fd of r.fds) closeFd(fd);
  }
  closeFd(ours);
  closeFd(theirs);
  return { ms, exit, gotFd, ...(error ? { error } : {}) };
}

async function tenant(job: Extract<Job, { kind: 'tenant' }>): Promise<unknown> {
  const helper: { ms: number; ok: boolean; error?: string }[] = [];
  const list: { ms: number; ok: boolean; error?: string }[] = [];
  for (let i = 0; i < job.count; i++) {
    const h = await helperRequest(job.socket, job.bridge, false);
    helper.push({ ms: h.ms, ok: h.exit === 0 && h.gotFd, ...(h.error ? { error: h.error } : {}) });
    const [l] = (await timed({ kind: 'timed', socket: job.socket, requests: [{ v: 1, op: 'list' }] })) as Timed[];
    list.push({ ms: l!.ms, ok: l!.ok, ...(l!.error ? { error: l!.error } : {}) });
    await new Promise((r) => setTimeout(r, job.gapMs ?? 0));
  }
  return { helper, list };
}

/** Every attack of issue 15 that one process can make, round after round, for `seconds`. */
async function attack(job: Extract<Job, { kind: 'attack' }>): Promise<unknown> {
  const end = Date.now() + job.seconds * 1000;
  const tally: Record<string, Record<string, number>> = {};
  const count = (what: string, exit: number): void => { (tally[what] ??= {})[String(exit)] = (tally[what]![String(exit)] ?? 0) + 1; };
  const ask = async (what: string, req: BrokerRequest): Promise<void> => {
    try { count(what, (await askBroker(req, job.socket, 60_000)).exit); } catch { count(what, -1); }
  };
  // Until `seconds` pass or stdin closes (the test's way to stop it).
  let stopped = false;
  process.stdin.on('end', () => { stopped = true; }).on('error', () => { stopped = true; }).resume();
  let rounds = 0;
  while (!stopped && Date.now() < end) {
    rounds++;
    await Promise.all([
      // Full QEMU sockets (more than the user's running bound), a 2 s flood of half-open connections, and the rest.
      ...Array.from({ length: 3 }, async () => count('full socket', (await helperRequest(job.socket, job.bridge, true)).exit)),
      // After the others connected: the flood fills this user's connection bound, so it would refuse them.
      new Promise((r) => setTimeout(r, 300)).then(() => flood({ kind: 'flood', socket: job.socket, connections: 500, seconds: 2 })).then(() => count('flood', 0)),
      ask('fd 0 (a socket to root: the test)', { v: 1, op: 'helper', argv: ['--fd=0', `--br=${job.bridge}`] }),
      ask('__proto__ option', { v: 1, op: 'up', options: JSON.parse('{"__proto__":["x"]}') }),
      ask('malformed down id', { v: 1, op: 'down', id: '../x' }),
      ask('up', { v: 1, op: 'up', options: { mode: 'bridge', dev: job.bridge, id: `evil${rounds}` } }),
    ]);
    await ask('down', { v: 1, op: 'down', id: `evil${rounds}` });
  }
  return { rounds, tally };
}

type Timed = { ms: number; ok: boolean; exit: number; error?: string };
const job = JSON.parse(process.argv[2]!) as Job;
const out = job.kind === 'file-fd' ? await fileFd(job) : job.kind === 'stuffed' ? await stuffed(job) : job.kind === 'flood' ? await flood(job) : job.kind === 'tenant' ? await tenant(job)
  : job.kind === 'attack' ? await attack(job) : await timed(job);
if (out !== null) process.stdout.write(JSON.stringify(out) + '\n');
process.exit(0);
