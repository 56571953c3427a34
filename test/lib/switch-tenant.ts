// Run as another user (setpriv) to play a hostile tenant of the vhost-user
// switch: "control" sends control requests and reports each reply (or why it
// could not connect) and the event lines it was sent; "frontend" connects to a port socket as a front-end and
// reports whether the switch closed on it; "attack" runs every tenant attack
// (switch-attack.ts) round after round until its stdin closes. Prints one JSON line on stdout.
import { spawnSync } from 'node:child_process';
import { connect } from 'node:net';
import { resolve } from 'node:path';
import { readJsonLines } from '../../src/json-lines.js';
import { ROOT } from './paths.js';
import { attack, type AttackJob } from './switch-attack.js';

export type Job =
  | { kind: 'control'; path: string; requests: object[] }
  | { kind: 'frontend'; path: string; holdMs?: number }
  | AttackJob;

export async function control(job: Extract<Job, { kind: 'control' }>): Promise<unknown> {
  const sock = connect(job.path);
  const err = await new Promise<string | null>((res) => { sock.once('connect', () => res(null)); sock.once('error', (e: NodeJS.ErrnoException) => res(e.code ?? e.message)); });
  if (err) return { connectError: err };
  const lines: unknown[] = [];
  const events: unknown[] = [];
  readJsonLines(sock, (o) => { if ('event' in o) events.push(o); else lines.push(o); });
  const replies: unknown[] = [];
  for (const r of job.requests) {
    const want = lines.length + 1;
    sock.write(JSON.stringify(r) + '\n');
    const deadline = Date.now() + 10_000;
    while (lines.length < want && Date.now() < deadline && !sock.destroyed) await new Promise((res) => setTimeout(res, 10));
    replies.push(lines.length >= want ? lines[want - 1] : { noReply: true });
  }
  await new Promise((res) => setTimeout(res, 200)); // events that follow the last reply
  sock.destroy();
  return { replies, events };
}

/** Connects and waits: a refused front-end sees the switch close the connection. */
export async function frontend(job: Extract<Job, { kind: 'frontend' }>): Promise<unknown> {
  const sock = connect(job.path);
  const err = await new Promise<string | null>((res) => { sock.once('connect', () => res(null)); sock.once('error', (e: NodeJS.ErrnoException) => res(e.code ?? e.message)); });
  if (err) return { connectError: err };
  sock.on('error', () => undefined);
  const closed = await new Promise<boolean>((res) => {
    const t = setTimeout(() => res(false), job.holdMs ?? 3000);
    sock.once('close', () => { clearTimeout(t); res(true); });
  });
  sock.destroy();
  return { closedBySwitch: closed };
}

const SCRIPT = resolve(ROOT, 'dist/test/lib/switch-tenant.js');

/** Runs one job as uid:gid (no supplementary groups) and returns its JSON line. */
export function asTenant(uid: number, gid: number, job: Exclude<Job, AttackJob>): Record<string, unknown> {
  const r = spawnSync('setpriv', [`--reuid=${uid}`, `--regid=${gid}`, '--clear-groups', process.execPath, SCRIPT, JSON.stringify(job)], { encoding: 'utf8', timeout: 120_000 });
  if (r.status !== 0) throw new Error(`tenant job failed (${r.status}): ${r.stderr}`);
  return JSON.parse(r.stdout) as Record<string, unknown>;
}

if (process.argv[1] === SCRIPT) {
  const job = JSON.parse(process.argv[2]!) as Job;
  const out = job.kind === 'control' ? await control(job) : job.kind === 'attack' ? await attack(job, { control, frontend }) : await frontend(job);
  process.stdout.write(JSON.stringify(out) + '\n');
  process.exit(0); // the attack's front-ends may hold timers
}
