// The hostile-tenant soak (issue 15): uid 65534 runs every broker attack
// (hostile-client.ts "attack") and every switch attack (switch-attack.ts, on
// a --control-group delegated control socket) in a loop, while three other
// users (65531-65533) each make N helper requests and N `list`s through the
// broker and two TCG guests, on switch ports owned by 65533 and 65532, ping
// each other through the vhost-user switch. The same run first measures the
// three users without the attacker. Every request must succeed, their p99
// within 2x of the quiet run's (taken as at least FLOOR_MS, as in
// broker-soak), the pings lose at most 1, broker and switch RSS grow less
// than 64 MiB, and no switch attack gets through.
// Short (N=10 over 10 s per phase, 35 s of pings, the attack ~20 s of it:
// 3 rounds of the broker attacker, 2 needed) in `npm test`;
// QNH_SOAK_SECONDS=S (`npm run soak`) makes N=50 over S/2 seconds per phase.
import assert from 'node:assert/strict';
import { chmodSync, chownSync, mkdirSync, mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join, resolve } from 'node:path';
import { after, before, describe, it } from 'node:test';
import { runAsUser } from '../lib/as-user.js';
import { startTestBroker, type BrokerRun } from '../lib/broker.js';
import { ControlClient } from '../lib/control-client.js';
import { guestSkipReason, startGuest, vhostUserNicArgs, type Guest, type GuestMarker } from '../lib/guest.js';
import { NetNs } from '../lib/netns.js';
import { ROOT } from '../lib/paths.js';
import { Serve } from '../lib/serve.js';
import { p99, rssKb } from '../lib/soak-figures.js';
import type { AttackReport } from '../lib/switch-attack.js';

const HOSTILE = resolve(ROOT, 'dist/test/lib/hostile-client.js');
const SWITCH_TENANT = resolve(ROOT, 'dist/test/lib/switch-tenant.js');
const SECONDS = Number(process.env.QNH_SOAK_SECONDS ?? 0);
const N = SECONDS > 0 ? 50 : 10;
/** Each phase (alone, under attack) spreads a tenant's N rounds (a helper request and a list) over about this long. */
const PHASE_SECONDS = SECONDS > 0 ? SECONDS / 2 : 10;
const GAP_MS = Math.max(200, Math.round((PHASE_SECONDS * 1000) / N) - 300);
/** Guest A pings B every PING_INTERVAL s from before the quiet phase; the attack lasts until the pings end. */
const PING_INTERVAL = 0.5;
const PING_SECONDS = 2 * PHASE_SECONDS + 15;
const PING_COUNT = Math.round(PING_SECONDS / PING_INTERVAL);
const ATTACKER = 65534;
const TENANTS = [65533, 65532, 65531];
/**
 * The quiet p99 the 2x is taken of is at least this (broker-soak's floor): a
 * `list` takes a few ms and a helper request ~80 ms alone, and the attacker's
 * own CPU use on 2 cores (its floods: tens of thousands of connections
 * accepted and refused) moves such figures by more than 2x; with 10 requests
 * a tenant p99 is the slowest of 30.
 */
const FLOOR_MS = 250;
const RSS_BOUND_KB = 64 * 1024;
const ip = (i: number): string => `10.5.15.${i + 1}`;

interface Sample { ms: number; ok: boolean; error?: string }
interface TenantRun { helper: Sample[]; list: Sample[] }

describe('hostile-tenant soak: broker and switch attacks in a loop, others served and pinging', { skip: guestSkipReason() ?? false }, () => {
  let ns: NetNs;
  let b: BrokerRun;
  let dir: string;
  let s: Serve;
  const guests: Guest[] = [];

  const tenants = (count: number): Promise<TenantRun[]> => Promise.all(TENANTS.map((uid) =>
    runAsUser<TenantRun>(uid, HOSTILE, { kind: 'tenant', socket: b.socket, bridge: 'br0', count, gapMs: GAP_MS }, { ns }).result));

  before(async () => {
    ns = NetNs.create();
    ns.addBridge('br0');
    b = await startTestBroker(ns, { acl: 'allow br0\nallow mode:bridge\n', startTimeoutMs: 60_000 });
    dir = mkdtempSync(join(tmpdir(), 'qnh-hts-'));
    chmodSync(dir, 0o711); // sockets inside reachable by path, the directory not writable
    mkdirSync(join(dir, 'rootonly'), { mode: 0o755 });
    mkdirSync(join(dir, 'tenant'), { mode: 0o700 });
    chownSync(join(dir, 'tenant'), ATTACKER, ATTACKER);
    s = new Serve(['--control', join(dir, 'switch.ctl'), '--control-group', String(ATTACKER), '--events']);
    await s.ready([join(dir, 'switch.ctl')], 60_000);
  });
  after(async () => {
    for (const g of guests) await g.kill();
    await s?.stop();
    await b?.stop();
    ns?.destroy();
    if (dir) rmSync(dir, { recursive: true, force: true });
  });

  it(`${N} helper requests and ${N} lists per tenant, ${PING_COUNT} pings: all served, p99 within 2x, loss <= 1, RSS flat`, { timeout: (3 * PING_SECONDS + 600) * 1000 }, async (t) => {
    const ctl = join(dir, 'switch.ctl');
    // The guests' ports, given by root to 65533 and 65532, then opened to anyone
    // (0666): connecting is allowed, only the switch's own owner check stands.
    const root = await ControlClient.connect(ctl);
    const victims: { port: number; socket: string }[] = [];
    for (const [i, uid] of [65533, 65532].entries()) {
      const socket = join(dir, `guest${i}.sock`);
      const r = await root.request({ op: 'add-port', socket, owner: { uid, gid: uid } });
      assert.equal(r.ok, true, JSON.stringify(r));
      chmodSync(socket, 0o666);
      victims.push({ port: r.port as number, socket });
    }
    root.close();
    const guestOpts = (i: number): Parameters<typeof startGuest>[0] => ({
      name: `hts${i}`, timeoutMs: (3 * PING_SECONDS + 400) * 1000, args: vhostUserNicArgs(victims[i]!.socket, { mac: `52:54:00:15:00:0${i + 1}` }),
    });
    // B answers; A pings it once B is up, so that no ping is lost to B's boot.
    guests.push(await startGuest({ ...guestOpts(1), settings: { mode: 'serve', ip: `${ip(1)}/24`, wait: 3 * PING_SECONDS + 300 } }));
    await guests[0]!.waitFor('READY', 240_000);
    const a = await startGuest({ ...guestOpts(0), settings: { mode: 'ping', ip: `${ip(0)}/24`, peer: ip(1), count: PING_COUNT, interval: PING_INTERVAL, deadline: 2 * PING_SECONDS + 60 } });
    guests.push(a);
    // Warm-up while A boots (not measured): the broker starts its request processes on the first burst.
    await tenants(2);
    await a.waitFor('READY', 240_000);
    const pingsFrom = Date.now();
    const rss0 = { broker: rssKb(b.pid), sw: rssKb(s.proc.pid!) };
    const quiet = await tenants(N);

    const rss1 = { broker: rssKb(b.pid), sw: rssKb(s.proc.pid!) };
    const brokerAttack = runAsUser<{ rounds: number; tally: unknown }>(ATTACKER, HOSTILE, { kind: 'attack', socket: b.socket, bridge: 'br0', seconds: 3 * PING_SECONDS + 300 }, { ns });
    const switchAttack = runAsUser<AttackReport>(ATTACKER, SWITCH_TENANT, { kind: 'attack', control: ctl, victims, rootOnly: join(dir, 'rootonly'), ownDir: join(dir, 'tenant') });
    let hostile: TenantRun[];
    let attackFrom: number;
    let tenantsDone: number;
    let ping: GuestMarker | undefined;
    let pingsTo: number;
    try {
      await new Promise((r) => setTimeout(r, 3000));
      attackFrom = Date.now();
      hostile = await tenants(N);
      tenantsDone = Date.now();
      // The attack goes on until the pings are done: in ping mode the guest
      // powers off once its ping is done (or its hard timeout kills it).
      ping = (await a.result()).markers.find((m) => /^QNH-PING-(OK|FAIL)$/.test(m.name));
      pingsTo = Date.now();
    } finally {
      brokerAttack.stop();
      switchAttack.stop();
    }
    const [bOut, sOut] = await Promise.all([brokerAttack.result, switchAttack.result]);
    const rss2 = { broker: rssKb(b.pid), sw: rssKb(s.proc.pid!) };

    const figures = (runs: TenantRun[], k: 'helper' | 'list'): { p99: number; failed: Sample[] } => {
      const all = runs.flatMap((r) => r[k]);
      return { p99: p99(all.map((x) => x.ms)), failed: all.filter((x) => !x.ok) };
    };
    const lines: string[] = [];
    const bad: string[] = [];
    for (const k of ['helper', 'list'] as const) {
      const q = figures(quiet, k);
      const h = figures(hostile, k);
      const bound = 2 * Math.max(q.p99, FLOOR_MS);
      lines.push(`${k}: p99 ${q.p99.toFixed(0)} ms alone, ${h.p99.toFixed(0)} ms under attack (${(h.p99 / q.p99).toFixed(2)}x, bound ${bound.toFixed(0)} ms); failed ${q.failed.length}/${h.failed.length} of ${3 * N}`);
      if (h.failed.length || q.failed.length) bad.push(`${k} failures: ${JSON.stringify([...q.failed, ...h.failed].slice(0, 3))}`);
      if (h.p99 > bound) bad.push(lines.at(-1)!);
    }
    const pm = /(\d+)\/(\d+)/.exec(ping?.text ?? '');
    const [got, sent] = pm ? [Number(pm[1]), Number(pm[2])] : [0, PING_COUNT];
    lines.push(`pings A->B through the switch: ${ping?.name ?? 'no result'} ${got}/${sent}, lost ${sent - got}; pings ${((pingsTo - pingsFrom) / 1000).toFixed(0)} s, attack ${((pingsTo - attackFrom) / 1000).toFixed(0)} s (tenants under attack ${((tenantsDone - attackFrom) / 1000).toFixed(0)} s)`);
    lines.push(`RSS kB start/attack start/end: broker ${rss0.broker}/${rss1.broker}/${rss2.broker}, switch ${rss0.sw}/${rss1.sw}/${rss2.sw}`);
    lines.push(`broker attacker: ${JSON.stringify(bOut)}`);
    lines.push(`switch attacker: ${sOut.rounds} rounds, refused ${JSON.stringify(sOut.refused)}, remaps accepted ${sOut.remapAccepted} refused ${sOut.remapRefused}`);
    for (const l of lines) t.diagnostic(l);
    assert.deepEqual(bad, [], lines.join('\n'));
    assert.deepEqual(sOut.breaches, [], 'switch attacks that got through');
    assert.ok(sOut.rounds >= 2 && bOut.rounds >= 2, 'the attacker went round');
    assert.ok(ping?.name === 'QNH-PING-OK' && sent === PING_COUNT && sent - got <= 1, `${lines.join('\n')}\n${a.output().slice(-1500)}`);
    assert.ok(rss2.broker - rss1.broker < RSS_BOUND_KB && rss2.sw - rss1.sw < RSS_BOUND_KB, lines.join('\n'));
    // Nothing of the attacker's stays on the switch: the guests' two ports only.
    const r2 = await ControlClient.connect(ctl);
    const ports = ((await r2.request({ op: 'list' })).ports as { port: number }[]).map((p) => p.port);
    r2.close();
    assert.deepEqual(ports, victims.map((v) => v.port));
  });
});
