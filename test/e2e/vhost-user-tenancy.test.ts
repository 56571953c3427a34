// The vhost-user switch as a multi-tenant service (issue 15): a real `vhost-user
// serve` as root and a hostile tenant (uid 65534, setpriv, no capabilities).
// The control socket is root's unless delegated; a delegated tenant touches
// only its own ports and plants nothing where it could not write; a port's
// socket takes only its owner's (or root's) front-end; one huge memory table
// is refused at once while root's `list` answers and other ports forward.
import assert from 'node:assert/strict';
import { chmodSync, chownSync, existsSync, lstatSync, mkdirSync, mkdtempSync, rmSync, statSync, symlinkSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { spawnSync } from 'node:child_process';
import { after, before, describe, it } from 'node:test';
import { startTestBroker } from '../lib/broker.js';
import { NetNs } from '../lib/netns.js';
import { BIN } from '../lib/paths.js';
import { ControlClient } from '../lib/control-client.js';
import { Serve } from '../lib/serve.js';
import { asTenant } from '../lib/switch-tenant.js';
import { fdCount, memfdCreate, testFrame, VhostFrontend } from '../lib/vhost-frontend.js';
import { eventually } from '../lib/wait.js';
import * as F from '../lib/frontend-codec.js';
import { Req } from '../../src/vhost-user/protocol/index.js';
import { closeFd } from '../../src/sys/libc.js';
import { listenUnix } from '../../src/sys/unix-socket.js';
import { ensureShrinkSeal } from '../../src/sys/seals.js';

process.setMaxListeners(40);
const T = 65534; // the tenant: nobody / nogroup
const OTHER = 4242; // another unprivileged user, with no account

type Reply = { ok: boolean; error?: string; [k: string]: unknown };
const repliesOf = (r: Record<string, unknown>): Reply[] => r.replies as Reply[];

describe('vhost-user switch: tenants cannot stop, see or take each other\'s ports', () => {
  let dir: string;
  let rootOnly: string;
  let tenantDir: string;
  before(() => {
    dir = mkdtempSync(join(tmpdir(), 'qnh-swt-'));
    chmodSync(dir, 0o711); // the tenant may reach sockets inside, not list or write
    rootOnly = join(dir, 'rootonly');
    mkdirSync(rootOnly, { mode: 0o755 });
    tenantDir = join(dir, 'tenant');
    mkdirSync(tenantDir, { mode: 0o700 });
    chownSync(tenantDir, T, T);
  });
  after(() => rmSync(dir, { recursive: true, force: true }));

  it('README\'s old recipe (--socket-mode 0666): the control socket stays root\'s; a stranger\'s front-end is refused on the port', async () => {
    const ctl = join(dir, 'ctl1.sock');
    const port = join(dir, 'p1.sock');
    const s = new Serve(['--control', ctl, '--socket', port, '--socket-mode', '0666', '--events']);
    try {
      await s.ready([ctl, port]);
      assert.equal(statSync(ctl).mode & 0o777, 0o600, 'control socket is 0600 whatever --socket-mode says');
      assert.equal(statSync(port).mode & 0o777, 0o666, '--socket-mode still applies to root\'s ports');
      assert.deepEqual(asTenant(T, T, { kind: 'control', path: ctl, requests: [{ op: 'list' }] }), { connectError: 'EACCES' });
      // The port's socket is world-writable, but the port is root's: the tenant is closed on, logged, reported.
      assert.deepEqual(asTenant(T, T, { kind: 'frontend', path: port }), { closedBySwitch: true });
      await s.waitEvent((e) => e.event === 'refused' && e.port === 0);
      const ev = s.events.find((e) => e.event === 'refused') as unknown as Record<string, unknown>;
      assert.equal(ev.uid, T);
      assert.equal(ev.socket, port);
      assert.match(s.log(), /port 0: refused a front-end \(pid \d+\): uid 65534 is not the port's owner \(uid 0\) nor root/);
      assert.ok(!s.events.some((e) => e.event === 'connected'), 'the stranger never got the port');
      // Root's own front-end still gets it.
      const fe = await VhostFrontend.connectReady(port);
      await fe.handshake({ memory: { name: 'qnh-swt-root' } });
      await s.waitEvent((e) => e.event === 'ready' && e.port === 0);
      fe.close();
    } finally {
      const { code } = await s.stop();
      assert.equal(code, 0, s.log());
    }
  });

  it('--socket-owner: the owner\'s front-end takes the port, another user\'s is refused', async () => {
    const port = join(dir, 'p2.sock');
    const s = new Serve(['--socket', port, '--socket-owner', `${T}:${T}`, '--socket-mode', '0666', '--events']);
    try {
      await s.ready([port]);
      const st = statSync(port);
      assert.deepEqual([st.uid, st.gid, st.mode & 0o777], [T, T, 0o666]);
      assert.deepEqual(asTenant(OTHER, OTHER, { kind: 'frontend', path: port, holdMs: 2000 }), { closedBySwitch: true });
      await s.waitEvent((e) => e.event === 'refused' && (e as unknown as { uid: number }).uid === OTHER);
      // The owner's front-end is kept (it would be closed at once if refused).
      assert.deepEqual(asTenant(T, T, { kind: 'frontend', path: port, holdMs: 1500 }), { closedBySwitch: false });
      await s.waitEvent((e) => e.event === 'connected' && e.port === 0);
    } finally {
      const { code } = await s.stop();
      assert.equal(code, 0, s.log());
    }
  });

  it('--control-group: a delegated tenant acts only on its own ports and plants nothing', async () => {
    const ctl = join(dir, 'ctl3.sock');
    const rootPort = join(dir, 'root3.sock');
    const s = new Serve(['--control', ctl, '--control-group', String(T), '--socket', rootPort, '--events', '--max-ports-per-user', '2']);
    const staleFd = listenUnix(join(tenantDir, 'stale.sock')); // root's socket in the tenant's directory
    closeFd(staleFd); // nobody listens any more: stale
    symlinkSync(rootOnly, join(tenantDir, 'link'));
    const listening = join(dir, 'root-listens.sock');
    const lfd = listenUnix(listening);
    try {
      await s.ready([ctl, rootPort]);
      const cst = statSync(ctl);
      assert.deepEqual([cst.gid, cst.mode & 0o777], [T, 0o660]);
      const staleIno = lstatSync(join(tenantDir, 'stale.sock')).ino;
      const mine = join(tenantDir, 'mine.sock');
      const r = repliesOf(asTenant(T, T, {
        kind: 'control', path: ctl, requests: [
          { op: 'list' },
          { op: 'set-mode', port: 0, mode: 'private' },
          { op: 'remove-port', port: 0 },
          { op: 'remove-port', socket: rootPort },
          { op: 'add-port', socket: join(rootOnly, 'planted.sock') },
          { op: 'add-port', socket: listening, client: true },
          { op: 'add-port', socket: join(tenantDir, 'x.sock'), owner: { uid: 0, gid: 0 } },
          { op: 'add-port', socket: join(tenantDir, 'link', 'via-link.sock') },
          { op: 'add-port', socket: join(tenantDir, 'stale.sock') },
          { op: 'add-port', socket: mine, mode: 'vepa' },
          { op: 'list' },
          { op: 'set-mode', port: 4, mode: 'private' }, // its own port (see below)
        ],
      }));
      assert.deepEqual(r[0], { ok: true, ports: [], uplink: null, macs: [] }, 'root\'s port is not shown to the tenant');
      assert.match(String(r[1]!.error), /set-mode 0: the port belongs to uid 0; uid 65534 may act only on its own ports/);
      assert.match(String(r[2]!.error), /remove-port 0: the port belongs to uid 0/);
      assert.match(String(r[3]!.error), /remove-port 0: the port belongs to uid 0/);
      assert.match(String(r[4]!.error), /uid 65534 may not write .*rootonly/);
      assert.match(String(r[5]!.error), /"client":true .* is for root only/);
      assert.match(String(r[6]!.error), /"owner" uid 0 gid 0 is not the caller/);
      assert.match(String(r[7]!.error), /symbolic link/);
      assert.match(String(r[8]!.error), /stale\.sock is a socket of uid 0, not of the port's owner \(uid 65534\); not replacing it/);
      // Port numbers are never reused, attempts refused while binding (planted, link, stale) included.
      const id = 4;
      assert.deepEqual(r[9], { ok: true, port: id, socket: mine, owner: { uid: T, gid: T } });
      assert.deepEqual((r[10]!.ports as { port: number; mode: string; owner: unknown }[]).map((p) => [p.port, p.mode, p.owner]), [[id, 'vepa', { uid: T, gid: T }]]);
      assert.equal(r[11]!.ok, true, 'its own port: allowed');

      assert.ok(!existsSync(join(rootOnly, 'planted.sock')), 'nothing planted in the root-only directory');
      assert.ok(!existsSync(join(rootOnly, 'via-link.sock')), 'nothing planted through the link');
      assert.equal(lstatSync(join(tenantDir, 'stale.sock')).ino, staleIno, 'root\'s stale socket not replaced');
      const st = statSync(mine);
      assert.deepEqual([st.uid, st.gid, st.mode & 0o777], [T, T, 0o600], 'the tenant\'s socket is its own, 0600');

      const root = await ControlClient.connect(ctl);
      const list = await root.request({ op: 'list' });
      assert.deepEqual((list.ports as { port: number; mode: string; owner: unknown; client: boolean }[]).map((p) => [p.port, p.mode, p.owner, p.client]),
        [[0, 'veb', { uid: 0, gid: 0 }, false], [id, 'private', { uid: T, gid: T }, false]], 'root\'s port unchanged; only one port added');
      assert.match(s.log(), /control: refused uid 65534 \(pid \d+\): set-mode 0: the port belongs to uid 0/);
      // A bound on how many ports one tenant holds (root's own are not counted against anyone).
      const withEvents = asTenant(T, T, { kind: 'control', path: ctl, requests: [
        { op: 'events' },
        { op: 'add-port', socket: join(tenantDir, 'two.sock') },
        { op: 'add-port', socket: join(tenantDir, 'three.sock') },
        { op: 'remove-port', socket: join(tenantDir, 'two.sock') },
      ] });
      const more = repliesOf(withEvents).slice(1);
      assert.equal(more[0]!.ok, true);
      assert.equal(more[2]!.ok, true, 'its own port: removed');
      // Its event stream carries its own ports' events, never root's port (0) or the uplink.
      const evs = withEvents.events as { event: string; port: unknown; socket: string }[];
      assert.deepEqual(evs.map((e) => [e.event, e.socket]), [['port-added', join(tenantDir, 'two.sock')], ['port-removed', join(tenantDir, 'two.sock')]]);
      assert.match(String(more[1]!.error), /uid 65534 has 2 ports already, the most one user may have/);
      assert.ok(!existsSync(join(tenantDir, 'three.sock')));
      // Root may act on the tenant's port; the tenant's socket goes with it.
      assert.equal((await root.request({ op: 'remove-port', port: id })).ok, true);
      assert.ok(!existsSync(mine));
      root.close();
    } finally {
      closeFd(lfd);
      const { code } = await s.stop();
      assert.equal(code, 0, s.log());
    }
  });

  it('a 64 TiB memory table is refused at once; root\'s list answers and another port keeps forwarding', async () => {
    const [a, b, c] = ['a', 'b', 'c'].map((n) => join(dir, `m-${n}.sock`)) as [string, string, string];
    const ctl = join(dir, 'ctl4.sock');
    const s = new Serve(['--socket', a, '--socket', b, '--socket', c, '--control', ctl]);
    const fes: VhostFrontend[] = [];
    let huge = -1;
    try {
      await s.ready([a, b, c, ctl]);
      const [fa, fb] = [await VhostFrontend.connectReady(a), await VhostFrontend.connectReady(b)];
      fes.push(fa, fb);
      await fa.handshake({ memory: { name: 'qnh-swt-a' } });
      await fb.handshake({ memory: { name: 'qnh-swt-b' } });
      const attacker = await VhostFrontend.connectReady(c);
      fes.push(attacker);
      await attacker.set(Req.SET_OWNER);
      await attacker.negotiateProtocol();
      assert.ok(attacker.replyAck, 'REPLY_ACK negotiated: the refusal comes as a failed ack');
      assert.equal(await attacker.callU64(Req.GET_MAX_MEM_SLOTS), 32n);
      // One sealed, sparse 64 TiB memfd: nothing is allocated, it only looks big.
      huge = memfdCreate('qnh-swt-64t', 2 ** 46);
      ensureShrinkSeal(huge);
      const table = F.memTable([{ guestPhysAddr: 0n, memorySize: 2n ** 46n, userspaceAddr: 0x7f00_0000_0000n, mmapOffset: 0n }]);
      const root = await ControlClient.connect(ctl);
      const t0 = Date.now();
      const [ack, listed] = await Promise.all([
        attacker.ack(Req.SET_MEM_TABLE, table, [huge]),
        (async () => { const l0 = Date.now(); const l = await root.request({ op: 'list' }, 3000); return { l, ms: Date.now() - l0 }; })(),
      ]);
      const refusedMs = Date.now() - t0;
      assert.notEqual(ack, 0n, 'the table is refused');
      assert.ok(refusedMs < 3000, `refused in ${refusedMs} ms`);
      assert.equal(listed.l.ok, true);
      assert.ok(listed.ms < 3000, `root's list answered in ${listed.ms} ms`);
      assert.ok(await s.waitLog(/port 2: SET_MEM_TABLE refused: SET_MEM_TABLE: 64 TiB of guest memory; this switch maps at most 128 GiB per port/), s.log());
      // The other ports forward as before, and the attacker's connection is its own business.
      await fa.transmit([testFrame(1, 0), testFrame(1, 1)]);
      await fb.receive(2);
      assert.equal(await attacker.callU64(Req.GET_FEATURES) > 0n, true, 'the refused port itself still answers');
      process.stderr.write(`# 64 TiB table refused in ${refusedMs} ms; root's list in ${listed.ms} ms\n`);
      root.close();
    } finally {
      if (huge >= 0) closeFd(huge);
      for (const f of fes) f.close();
      const { code } = await s.stop();
      assert.equal(code, 0, s.log());
    }
  });

  it('a tenant remapping 128 GiB tables in a loop waits on its own budget: others forward, root\'s list answers', async () => {
    const [a, b, c] = ['a', 'b', 'c'].map((n) => join(dir, `r-${n}.sock`)) as [string, string, string];
    const ctl = join(dir, 'ctl5.sock');
    const s = new Serve(['--socket', a, '--socket', b, '--control', ctl]);
    const fes: VhostFrontend[] = [];
    let big = -1;
    try {
      await s.ready([a, b, ctl]);
      const root = await ControlClient.connect(ctl);
      assert.equal((await root.request({ op: 'add-port', socket: c, owner: { uid: T, gid: T } })).ok, true);
      const [fa, fb] = [await VhostFrontend.connectReady(a), await VhostFrontend.connectReady(b)];
      fes.push(fa, fb);
      await fa.handshake({ memory: { name: 'qnh-swt-ra' } });
      await fb.handshake({ memory: { name: 'qnh-swt-rb' } });
      /** Frames a -> b one at a time for `ms`: how much the data path does meanwhile. */
      const pingPong = async (ms: number): Promise<number> => {
        let n = 0;
        for (const t0 = Date.now(); Date.now() - t0 < ms; n++) {
          await fa.transmit([testFrame(3, n)], 15_000);
          await fb.receive(1, 15_000);
        }
        return n;
      };
      // The rate alone over 3 s (thousands of frames); under the loop over 6 s,
      // which a stall of the mapping (1-3 s, below) must not fill.
      const baseline = await pingPong(3000);
      const fdsBefore = fdCount(s.proc.pid!);
      // Root's own front-end on the tenant's port (a front-end is the owner's or root's): the budget is the owner's.
      const attacker = await VhostFrontend.connectReady(c);
      fes.push(attacker);
      await attacker.set(Req.SET_OWNER);
      await attacker.negotiateProtocol();
      big = memfdCreate('qnh-swt-128g', 2 ** 37);
      ensureShrinkSeal(big);
      const table = F.memTable([{ guestPhysAddr: 0n, memorySize: 2n ** 37n, userspaceAddr: 0x7f00_0000_0000n, mmapOffset: 0n }]);
      for (let i = 0; i < 20; i++) assert.ok(attacker.request(Req.SET_MEM_TABLE, table, [big], true));
      const lists: number[] = [];
      const [during] = await Promise.all([pingPong(6000), (async () => {
        for (let i = 0; i < 3; i++) {
          const t0 = Date.now();
          assert.equal((await root.request({ op: 'list' }, 3000)).ok, true);
          lists.push(Date.now() - t0);
          await new Promise((r) => setTimeout(r, 500));
        }
      })()]);
      process.stderr.write(`# a->b frames: ${baseline} in 3 s alone, ${during} in 6 s under the remap loop; root's list in ${lists.join(', ')} ms\n`);
      // Without the budget: ~0.3% of the baseline (11 frames in 5 s against 4007). With it, the one
      // table the budget lets through at once stalls everyone for its mapping (~1-3 s), then nothing does.
      assert.ok(during / 6 >= baseline / 3 / 10, `forwarding under the loop: ${during} frames in 6 s vs ${baseline} in 3 s alone`);
      assert.ok(await s.waitLog(/port 2: SET_MEM_TABLE refused: SET_MEM_TABLE: remapping guest memory too often/, 10_000), s.log());
      // The attacker goes while a table still waits: nothing of it stays behind.
      attacker.close();
      closeFd(big);
      big = -1;
      await eventually('the tenant\'s fds to be released', () => fdCount(s.proc.pid!) <= fdsBefore, 40_000);
      await fa.transmit([testFrame(4, 0)]);
      await fb.receive(1);
      root.close();
    } finally {
      if (big >= 0) closeFd(big);
      for (const f of fes) f.close();
      const { code } = await s.stop();
      assert.equal(code, 0, s.log());
    }
  });

  it('--max-guest-memory bounds a port below the default; a table within it is accepted', async () => {
    const [a, b] = ['a', 'b'].map((n) => join(dir, `l-${n}.sock`)) as [string, string];
    const s = new Serve(['--socket', a, '--socket', b, '--max-guest-memory', '8M']);
    const fes: VhostFrontend[] = [];
    try {
      await s.ready([a, b]);
      const ok = await VhostFrontend.connectReady(a);
      fes.push(ok);
      await ok.handshake({ memory: { name: 'qnh-swt-8m', size: 8 << 20 } });
      const big = await VhostFrontend.connectReady(b);
      fes.push(big);
      await assert.rejects(big.handshake({ memory: { name: 'qnh-swt-16m', size: 16 << 20 } }), /SET_MEM_TABLE refused/);
      assert.ok(await s.waitLog(/16 MiB of guest memory; this switch maps at most 8 MiB per port \(--max-guest-memory\)/), s.log());
    } finally {
      for (const f of fes) f.close();
      const { code } = await s.stop();
      assert.equal(code, 0, s.log());
    }
    const bad = new Serve(['--socket', join(dir, 'l-c.sock'), '--max-guest-memory', '1P']);
    assert.equal(await bad.exited, 2);
    assert.match(bad.log(), /--max-guest-memory '1P' is not a size/);
  });
});

describe('vhost-user switch: a port asked for through the broker belongs to the caller', () => {
  it('uid 65534 `up --transport vhost-user`: the port and its socket are its own (0600); its front-end takes it, another user\'s is refused', async () => {
    const dir = mkdtempSync(join(tmpdir(), 'qnh-swtb-'));
    chmodSync(dir, 0o711);
    const ctl = join(dir, 'switch.ctl');
    const s = new Serve(['--control', ctl, '--events']);
    const ns = NetNs.create('qnhswt');
    const saved = process.env.QEMU_NET_HELPER_SWITCH;
    let b: Awaited<ReturnType<typeof startTestBroker>> | undefined;
    try {
      await s.ready([ctl], 60_000);
      process.env.QEMU_NET_HELPER_SWITCH = ctl; // the broker (root) is told where the switch is
      b = await startTestBroker(ns, { acl: `allow mode:veb user=${T}\n`, startTimeoutMs: 60_000 });
      chmodSync(b.stateDir, 0o711); // as /run/qemu-net-helper: QEMU must reach its socket inside
      const up = spawnSync('ip', ['netns', 'exec', ns.name, 'setpriv', `--reuid=${T}`, `--regid=${T}`, '--clear-groups', process.execPath, BIN, 'up', '--mode=veb', '--transport=vhost-user', '--memory=128M', '--id=t1', '--json'],
        { encoding: 'utf8', env: b.clientEnv() });
      assert.equal(up.status, 0, up.stderr + b.lines().join('\n'));
      const socket = (JSON.parse(up.stdout) as { endpoint: { info: { socket: string } } }).endpoint.info.socket;
      const st = statSync(socket);
      assert.deepEqual([st.uid, st.gid, st.mode & 0o777], [T, T, 0o600], 'the socket is the caller\'s');
      const root = await ControlClient.connect(ctl);
      const list = await root.request({ op: 'list' });
      assert.deepEqual((list.ports as { socket: string; owner: unknown }[]).map((p) => [p.socket, p.owner]), [[socket, { uid: T, gid: T }]]);
      assert.deepEqual(asTenant(T, T, { kind: 'frontend', path: socket, holdMs: 1500 }), { closedBySwitch: false });
      await s.waitEvent((e) => e.event === 'connected' && e.socket === socket);
      // Root chmods it open: the file allows anyone now, the switch still does not.
      chmodSync(socket, 0o666);
      assert.deepEqual(asTenant(OTHER, OTHER, { kind: 'frontend', path: socket }), { closedBySwitch: true });
      await s.waitEvent((e) => e.event === 'refused' && e.socket === socket);
      const down = spawnSync('ip', ['netns', 'exec', ns.name, 'setpriv', `--reuid=${T}`, `--regid=${T}`, '--clear-groups', process.execPath, BIN, 'down', 't1'], { encoding: 'utf8', env: b.clientEnv() });
      assert.equal(down.status, 0, down.stderr);
      assert.deepEqual((await root.request({ op: 'list' })).ports, []);
      assert.ok(!existsSync(socket));
      root.close();
    } finally {
      if (saved === undefined) delete process.env.QEMU_NET_HELPER_SWITCH; else process.env.QEMU_NET_HELPER_SWITCH = saved;
      await b?.stop();
      const { code } = await s.stop();
      ns.destroy();
      rmSync(dir, { recursive: true, force: true });
      assert.equal(code, 0, s.log());
    }
  });
});
