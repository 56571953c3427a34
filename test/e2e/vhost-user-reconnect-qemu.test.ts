// Real QEMU 7.2 peers losing and regaining their vhost-user connection to the
// switch, the ways users hit it: the switch restarted under a running guest,
// and the guest's QEMU killed and started again on the same socket. Both
// sides: QEMU as the client (reconnect=1) and QEMU as the server (--client).
// The switch's events must come in order with the right port and socket, and
// the guest must carry traffic again afterwards (pinged from the far end of
// the uplink, a veth in a throwaway namespace).
import assert from 'node:assert/strict';
import { execFile, type ChildProcess } from 'node:child_process';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, before, describe, it, type TestContext } from 'node:test';
import { promisify } from 'node:util';
import { guestSkipReason, startGuest, vhostUserNicArgs, type Guest } from '../lib/guest.js';
import { withNetNs, type NetNs } from '../lib/netns.js';
import { Serve, type EventLine } from '../lib/serve.js';

const skip = guestSkipReason() ?? false;
const run = promisify(execFile);
const UPLINK_IP = '10.6.0.254';
const GUEST_IP = '10.6.0.1';
const MAC = '52:54:00:66:00:01';
// A TCG boot takes 8-9 s at load average 16; several run in turn here and the
// machine is shared: generous limits, every one well over 3x a normal run.
const BOOT_MS = 240_000;
const RECONNECT_MS = 60_000;

/** The uplink: veth up0 (the switch's) to far0 (the address the guest is pinged from). */
function uplinkLab(ns: NetNs): void {
  ns.ip('link', 'add', 'up0', 'type', 'veth', 'peer', 'name', 'far0');
  ns.ip('addr', 'add', `${UPLINK_IP}/24`, 'dev', 'far0');
  ns.ip('link', 'set', 'far0', 'up');
  ns.ip('link', 'set', 'up0', 'up');
}

/**
 * Pings the guest from far0 until one reply comes back (its link may take a
 * moment after `ready`), then requires a short burst to get through too:
 * requests cross the switch to the guest's RX ring, replies come from its TX
 * ring. Returns milliseconds to the first reply. After an outage with pings
 * running, far0's ARP entry for the guest has failed, and the kernel waits its
 * retrans_time (1 s) before probing again: a second or two here is far0's, not
 * the switch's (seen on a packet socket on far0: the guest answers ARP at once).
 */
async function guestAnswers(ns: NetNs, timeoutMs: number): Promise<number> {
  const t0 = Date.now();
  const ping = async (...args: string[]): Promise<string> => {
    try {
      return (await run('ip', ['netns', 'exec', ns.name, 'busybox', 'ping', ...args, GUEST_IP], { encoding: 'utf8' })).stdout;
    } catch (e) {
      return String((e as { stdout?: string }).stdout ?? '');
    }
  };
  while (!/ 1 packets received/.test(await ping('-c', '1', '-W', '2'))) {
    if (Date.now() - t0 > timeoutMs) assert.fail(`no echo reply from ${GUEST_IP} within ${timeoutMs} ms`);
    await new Promise((r) => setTimeout(r, 100));
  }
  const firstMs = Date.now() - t0;
  const burst = await ping('-c', '5', '-i', '0.3', '-W', '5');
  const got = Number(/ (\d+) packets received/.exec(burst)?.[1] ?? 0);
  assert.ok(got >= 3, `only ${got}/5 echo replies after the first one:\n${burst}`);
  return firstMs;
}

/**
 * Echo requests to the guest every 0.1 s in the background, so a restart hits
 * rings with frames in flight. stop() ends it (SIGINT: busybox prints its totals).
 */
class BackgroundPing {
  private readonly proc: ChildProcess;
  private out = '';
  private readonly exited: Promise<void>;
  constructor(ns: NetNs) {
    this.proc = ns.spawn('busybox', ['ping', '-i', '0.1', GUEST_IP], { stdio: ['ignore', 'pipe', 'ignore'] });
    this.proc.stdout!.setEncoding('utf8').on('data', (d: string) => { this.out += d; });
    this.exited = new Promise((res) => this.proc.once('exit', () => res()));
  }
  async stop(): Promise<string> {
    this.proc.kill('SIGINT');
    const t = setTimeout(() => this.proc.kill('SIGKILL'), 5000);
    await this.exited;
    clearTimeout(t);
    return /\d+ packets transmitted, \d+ packets received/.exec(this.out)?.[0] ?? 'no totals';
  }
}

/** Connection events of the port (mac-learned left out: it interleaves), each checked for port 0 and the socket. */
function connectionEvents(s: Serve, socket: string): string[] {
  const evs = s.events.filter((e) => e.event !== 'mac-learned');
  for (const e of evs) assert.deepEqual([e.port, e.socket], [0, socket], `event fields: ${JSON.stringify(e)}`);
  return evs.map((e) => e.event);
}

/** The guest's own pings of the uplink (qnh.watch) get answers: its last reachability change is UP (a DOWN in an outage must be followed by an UP). */
async function guestReachesUplink(g: Guest): Promise<void> {
  const deadline = Date.now() + RECONNECT_MS;
  while (g.reach(UPLINK_IP) !== 'up') {
    if (Date.now() > deadline) assert.fail(g.describe(`${UPLINK_IP} not reachable from the guest (${g.reach(UPLINK_IP)})`));
    await new Promise((r) => setTimeout(r, 200));
  }
}

const count = (s: Serve, event: string): number => s.events.filter((e) => e.event === event).length;

/** Waits for the n-th event named `event`. */
async function nth(s: Serve, event: string, n: number, timeoutMs: number): Promise<EventLine> {
  await s.waitEvent(() => count(s, event) >= n, timeoutMs);
  return s.events.filter((e) => e.event === event)[n - 1]!;
}

/** The guest's MAC learned on port 0 (at least `n` times in this switch's life). */
async function learned(s: Serve, n: number): Promise<void> {
  await s.waitEvent(() => s.events.filter((e) => e.event === 'mac-learned' && e.port === 0 && e.mac === MAC).length >= n, RECONNECT_MS);
}

/** A guest on `socket`: QEMU listening (server=on) or connecting with reconnect=1; `queues` pairs on as many vCPUs. */
function guest(ns: NetNs, name: string, socket: string, qemuListens: boolean, queues = 1): Promise<Guest> {
  return startGuest({
    ns, name, timeoutMs: 500_000, smp: queues,
    args: vhostUserNicArgs(socket, { mac: MAC, queues, ...(qemuListens ? { server: true } : { reconnect: 1 }) }),
    // watch: the guest pings the uplink once a second too, so its TX ring is busy as well.
    settings: { mode: 'serve', ip: `${GUEST_IP}/24`, wait: 480, watch: UPLINK_IP, ...(queues > 1 ? { queues: 1 } : {}) },
  });
}

/** The first guest boots on the port: ready, its MAC learned, traffic both ways, nothing refused. */
async function firstBoot(t: TestContext, s: Serve, ns: NetNs, sock: string, g: Guest): Promise<void> {
  await nth(s, 'ready', 1, BOOT_MS);
  await g.waitFor('READY', BOOT_MS);
  t.diagnostic(`first boot: first reply after ${await guestAnswers(ns, RECONNECT_MS)} ms`);
  await learned(s, 1);
  await guestReachesUplink(g);
  assert.deepEqual(connectionEvents(s, sock), ['port-added', 'connected', 'ready']);
  assert.deepEqual(refusals(s), [], 'every request of QEMU accepted');
}

/** A new switch process on the port of a running guest: ready again, learned, traffic, nothing refused. */
async function switchBack(t: TestContext, what: string, s: Serve, ns: NetNs, sock: string, g: Guest, restarted: number, during: BackgroundPing): Promise<void> {
  await nth(s, 'ready', 1, RECONNECT_MS);
  const back = await guestAnswers(ns, RECONNECT_MS);
  t.diagnostic(`${what}: ready ${Date.parse(s.events.find((e) => e.event === 'ready')!.time) - restarted} ms after the new switch started, first reply after ${back} ms of pinging; background pings: ${await during.stop()}`);
  await learned(s, 1);
  await guestReachesUplink(g);
  assert.deepEqual(connectionEvents(s, sock), ['port-added', 'connected', 'ready']);
  assert.deepEqual(refusals(s), [], 'every request of QEMU accepted');
}

/** Kills the first guest's QEMU and starts a second on the same socket: events, learning and traffic as before. */
async function replaceQemu(t: TestContext, s: Serve, ns: NetNs, sock: string, guests: Guest[], qemuListens: boolean): Promise<void> {
  await guests[0]!.kill();
  t.diagnostic(`QEMU killed: disconnected (${(await nth(s, 'disconnected', 1, RECONNECT_MS)).reason})`);
  guests.push(await guest(ns, 'qemu-2', sock, qemuListens));
  await nth(s, 'ready', 2, BOOT_MS);
  await guests[1]!.waitFor('READY', BOOT_MS);
  t.diagnostic(`new QEMU: first reply after ${await guestAnswers(ns, RECONNECT_MS)} ms`);
  await learned(s, 2);
  await guestReachesUplink(guests[1]!);
  assert.deepEqual(connectionEvents(s, sock), ['port-added', 'connected', 'ready', 'disconnected', 'connected', 'ready']);
  assert.deepEqual(refusals(s), [], 'every request of QEMU accepted');
}

/** Requests the switch refused (each one a front-end the device did not understand). */
const refusals = (s: Serve): string[] => s.log().split('\n').filter((l) => / refused: /.test(l));

describe('real QEMU reconnecting to the vhost-user switch', { skip }, () => {
  let dir: string;
  before(() => { dir = mkdtempSync(join(tmpdir(), 'qnh-vurc-')); });
  after(() => rmSync(dir, { recursive: true, force: true }));

  it('switch listening, QEMU reconnect=1: QEMU first, then the switch; the switch restarted (SIGTERM); QEMU killed and started again', { timeout: 900_000 }, async (t) => {
    await withNetNs(async (ns) => {
      uplinkLab(ns);
      const sock = join(dir, 'server-side.sock');
      const args = ['--socket', sock, '--uplink', 'up0', '--events'];
      const guests: Guest[] = [];
      let s: Serve | undefined;
      try {
        // QEMU started before the switch exists: its start-up retries the connection every second.
        guests.push(await guest(ns, 'qemu-1', sock, false));
        const early = await Promise.race([guests[0]!.done.then(() => 'exited'), new Promise((r) => setTimeout(() => r('waiting'), 3000))]);
        assert.equal(early, 'waiting', guests[0]!.describe('QEMU gave up on the missing back-end'));
        s = new Serve(args, ns);
        await s.ready([sock]);
        await firstBoot(t, s, ns, sock, guests[0]!);

        // A restart as a service manager does it: SIGTERM, a new process on the same path.
        const during = new BackgroundPing(ns);
        await new Promise((r) => setTimeout(r, 1000));
        const { code } = await s.stop();
        assert.equal(code, 0, s.log());
        assert.deepEqual(connectionEvents(s, sock), ['port-added', 'connected', 'ready', 'disconnected']);
        assert.equal(s.events.at(-1)!.reason, 'back-end stopping');
        const restarted = Date.now();
        s = new Serve(args, ns);
        await s.ready([sock]);
        // QEMU retries by itself (reconnect=1) and replays the whole setup to the running guest.
        await switchBack(t, 'switch restart', s, ns, sock, guests[0]!, restarted, during);

        // The guest's QEMU dies; another one comes up on the same socket.
        await replaceQemu(t, s, ns, sock, guests, false);
      } finally {
        for (const g of guests) await g.kill();
        await s?.stop();
      }
    });
  });

  it('--client, QEMU listening (server=on): QEMU killed and started again, then the switch killed (SIGKILL) and started again', { timeout: 900_000 }, async (t) => {
    await withNetNs(async (ns) => {
      uplinkLab(ns);
      const sock = join(dir, 'client-side.sock');
      const args = ['--socket', sock, '--client', '--uplink', 'up0', '--events'];
      let s = new Serve(args, ns);
      const guests: Guest[] = [];
      try {
        // The switch is up first and keeps retrying; QEMU's start-up waits for it to connect.
        assert.ok(await s.waitLog(/serving 1 port/), s.log());
        guests.push(await guest(ns, 'qemu-1', sock, true));
        await firstBoot(t, s, ns, sock, guests[0]!);

        // QEMU dies, leaving its socket file behind; a new QEMU listens on the same path.
        await replaceQemu(t, s, ns, sock, guests, true);

        // The switch crashes; QEMU keeps listening and the new switch connects to it.
        const during = new BackgroundPing(ns);
        await new Promise((r) => setTimeout(r, 1000));
        s.proc.kill('SIGKILL');
        await s.exited;
        const restarted = Date.now();
        s = new Serve(args, ns);
        await switchBack(t, 'switch crash', s, ns, sock, guests[1]!, restarted, during);
        assert.equal(guests[1]!.markers.filter((m) => m.name === 'QNH-BOOT').length, 1, 'the same guest ran on through the switch crash');
      } finally {
        for (const g of guests) await g.kill();
        await s.stop();
      }
    });
  });

  // QEMU 7.2 has one vhost_dev per queue pair on the one socket, and each sends
  // the memory regions (ADD_MEM_REG): refusing the repeats made QEMU drop vhost
  // for the whole NIC, which then carried nothing (found here).
  it('multiqueue (--queues 2, QEMU queues=2 on 2 vCPUs): traffic on a 2-pair NIC, then after a switch restart', { timeout: 900_000 }, async (t) => {
    await withNetNs(async (ns) => {
      uplinkLab(ns);
      const sock = join(dir, 'multiqueue.sock');
      const args = ['--socket', sock, '--uplink', 'up0', '--events', '--queues', '2'];
      let s = new Serve(args, ns);
      let g: Guest | undefined;
      try {
        await s.ready([sock]);
        g = await guest(ns, 'qemu-mq', sock, false, 2);
        await nth(s, 'ready', 1, BOOT_MS);
        assert.equal((await g.waitFor('QUEUES', BOOT_MS)).text, 'rx=2 tx=2', 'the guest has two queue pairs');
        await g.waitFor('READY', BOOT_MS);
        t.diagnostic(`first boot: first reply after ${await guestAnswers(ns, RECONNECT_MS)} ms`);
        await learned(s, 1);
        assert.deepEqual(refusals(s), []);
        assert.equal((await s.stop()).code, 0, s.log());

        const restarted = Date.now();
        s = new Serve(args, ns);
        await s.ready([sock]);
        await nth(s, 'ready', 1, RECONNECT_MS);
        const readyMs = Date.now() - restarted;
        t.diagnostic(`switch restart: ready ${readyMs} ms after the new switch started, first reply after ${await guestAnswers(ns, RECONNECT_MS)} ms of pinging`);
        await learned(s, 1);
        await guestReachesUplink(g);
        assert.deepEqual(connectionEvents(s, sock), ['port-added', 'connected', 'ready']);
        assert.deepEqual(refusals(s), [], 'every request of QEMU accepted');
      } finally {
        await g?.kill();
        await s.stop();
      }
    });
  });
});
