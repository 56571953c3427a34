// The broker's hostile-tenant soak (issue 15): three users (65531-65533) each
// make N helper requests (QEMU's socketpair in their own process, the tap fd
// received) and N `list`s, first alone, then while uid 65534 runs every
// broker attack in a loop (full QEMU sockets, connection floods, a non-socket
// fd, prototype options, malformed ids, endpoints made and removed). Every
// request of the three must succeed, their p99 latency stay within 2x of the
// run without the attacker, and the broker's RSS stay flat. N is 10 in
// `npm test` and 50 under `npm run soak:broker` (QNH_BROKER_SOAK_REQUESTS).
import assert from 'node:assert/strict';
import { spawn } from 'node:child_process';
import { readFileSync } from 'node:fs';
import { resolve } from 'node:path';
import { after, before, describe, it } from 'node:test';
import { startTestBroker, type BrokerRun } from '../lib/broker.js';
import { NetNs } from '../lib/netns.js';
import { ROOT } from '../lib/paths.js';

const HOSTILE = resolve(ROOT, 'dist/test/lib/hostile-client.js');
const N = Number(process.env.QNH_BROKER_SOAK_REQUESTS ?? 10);
const ATTACKER = 65534;
const TENANTS = [65533, 65532, 65531];
/**
 * p99 "within 2x" is measured against at least this much: a `list` takes a
 * few ms alone, a helper request ~100 ms, and on a shared 2-core machine the
 * attacker's own CPU use (its floods: tens of thousands of connections, each
 * accepted and refused) moves such figures by more than 2x without the broker
 * waiting on anyone. With 10 requests a tenant, p99 is the slowest of 30.
 */
const FLOOR_MS = 250;

interface Sample { ms: number; ok: boolean; error?: string }
interface TenantRun { helper: Sample[]; list: Sample[] }

const p99 = (xs: number[]): number => {
  const s = [...xs].sort((a, b) => a - b);
  return s[Math.min(s.length - 1, Math.ceil(0.99 * s.length) - 1)]!;
};

describe('broker soak: three tenants served while a fourth attacks', () => {
  let ns: NetNs;
  let b: BrokerRun;

  /** Runs a hostile-client job as uid; `stdin` receives the pipe that stops an attack when closed. */
  const run = <T>(uid: number, job: Record<string, unknown>, stdin?: (s: NodeJS.WritableStream) => void): Promise<T> => new Promise((res, rej) => {
    const p = spawn('ip', ['netns', 'exec', ns.name, 'setpriv', `--reuid=${uid}`, `--regid=${uid}`, '--clear-groups', process.execPath, HOSTILE, JSON.stringify(job)], { stdio: ['pipe', 'pipe', 'pipe'] });
    if (stdin) stdin(p.stdin!);
    else p.stdin!.end();
    let out = '';
    let err = '';
    p.stdout!.setEncoding('utf8').on('data', (d: string) => { out += d; });
    p.stderr!.setEncoding('utf8').on('data', (d: string) => { err += d; });
    p.once('exit', (code) => (code === 0 ? res(JSON.parse(out) as T) : rej(new Error(`${String(job.kind)} as ${uid}: exit ${code}: ${err}`))));
  });
  const tenants = (count = N): Promise<TenantRun[]> => Promise.all(TENANTS.map((uid) => run<TenantRun>(uid, { kind: 'tenant', socket: b.socket, bridge: 'br0', count, gapMs: 200 })));
  const rssKb = (): number => Number(/^VmRSS:\s+(\d+)/m.exec(readFileSync(`/proc/${b.pid}/status`, 'utf8'))![1]);

  before(async () => {
    ns = NetNs.create();
    ns.addBridge('br0');
    b = await startTestBroker(ns, { acl: 'allow br0\nallow mode:bridge\n', startTimeoutMs: 60_000 });
  });
  after(async () => {
    await b?.stop();
    ns?.destroy();
  });

  it(`${N} helper requests and ${N} lists per tenant: all served, p99 within 2x of the quiet run, RSS flat`, async (t) => {
    // Warm-up (not measured): the broker starts its request processes on the first burst.
    await tenants(2);
    const quiet = await tenants();
    const rss0 = rssKb();
    // The attacker outlasts the tenants: it runs until they are done (closing its stdin stops it after its round).
    let attackerStdin: NodeJS.WritableStream | undefined;
    const attacker = run<{ rounds: number; tally: unknown }>(ATTACKER, { kind: 'attack', socket: b.socket, bridge: 'br0', seconds: 900 }, (s) => { attackerStdin = s; });
    await new Promise((r) => setTimeout(r, 3000));
    const t0 = Date.now();
    const hostile = await tenants();
    const tenantSeconds = (Date.now() - t0) / 1000;
    const rss1 = rssKb();
    attackerStdin!.end();
    const attackerOut = await attacker.catch((e: Error) => ({ rounds: -1, tally: e.message }));

    const figures = (runs: TenantRun[], k: 'helper' | 'list'): { p99: number; max: number; failed: Sample[] } => {
      const all = runs.flatMap((r) => r[k]);
      return { p99: p99(all.map((s) => s.ms)), max: Math.max(...all.map((s) => s.ms)), failed: all.filter((s) => !s.ok) };
    };
    const lines: string[] = [];
    for (const k of ['helper', 'list'] as const) {
      const q = figures(quiet, k);
      const h = figures(hostile, k);
      lines.push(`${k}: p99 ${q.p99.toFixed(0)} ms alone, ${h.p99.toFixed(0)} ms under attack (${(h.p99 / q.p99).toFixed(2)}x); failed ${q.failed.length}/${h.failed.length}`);
      assert.deepEqual(h.failed, [], `${k} requests failed under attack`);
      assert.deepEqual(q.failed, [], `${k} requests failed alone`);
      assert.ok(h.p99 <= 2 * Math.max(q.p99, FLOOR_MS), lines.at(-1));
    }
    lines.push(`broker RSS ${rss0} -> ${rss1} kB during ${tenantSeconds.toFixed(0)} s of attack; attacker: ${JSON.stringify(attackerOut)}`);
    for (const l of lines) t.diagnostic(l);
    assert.ok(rss1 - rss0 < 64 * 1024, lines.at(-1));
  });
});
