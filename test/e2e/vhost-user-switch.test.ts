// The vhost-user switch (real `vhost-user serve` process) driven by our test
// front-end: learning, flooding and filtering between three ports; events in
// order; ports added and removed at run time through the control socket while
// others carry traffic; veb/private/vepa against an uplink veth whose far end
// is a packet socket in a test namespace.
import assert from 'node:assert/strict';
import { existsSync, mkdtempSync, rmSync, statSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, before, describe, it } from 'node:test';
import { ControlClient } from '../lib/control-client.js';
import { withNetNs } from '../lib/netns.js';
import { PacketPeer } from '../lib/packet-peer.js';
import { Serve, type EventLine } from '../lib/serve.js';
import { ethFrame, tagOf, TestGuest } from '../lib/switch-guests.js';
import { VhostFrontend } from '../lib/vhost-frontend.js';
import { acceptUnix, listenUnix } from '../../src/sys/unix-socket.js';
import { closeFd } from '../../src/sys/libc.js';

process.setMaxListeners(40);
const MAC = { a: '52:54:00:00:00:0a', b: '52:54:00:00:00:0b', c: '52:54:00:00:00:0c', d: '52:54:00:00:00:0d', h: '02:00:00:00:00:99' };
const BCAST = 'ff:ff:ff:ff:ff:ff';

/** The events of one port, names only, in order. */
const namesOf = (events: EventLine[], port: number): string[] => events.filter((e) => e.port === port && e.event !== 'mac-learned').map((e) => e.event);

describe('vhost-user switch with our test front-end', () => {
  let dir: string;
  before(() => { dir = mkdtempSync(join(tmpdir(), 'qnh-sw-')); });
  after(() => rmSync(dir, { recursive: true, force: true }));

  it('three veb ports: flooding, learning, filtering, counters, events in order; ports added and removed at run time', async () => {
    const [a, b, c, d] = ['a', 'b', 'c', 'd'].map((n) => join(dir, `${n}.sock`)) as [string, string, string, string];
    const ctl = join(dir, 'ctl.sock');
    const s = new Serve(['--socket', a, '--socket', b, '--socket', c, '--events', '--control', ctl, '--socket-mode', '0660']);
    const guests: TestGuest[] = [];
    try {
      await s.ready([a, b, c, ctl]);
      assert.equal(statSync(a).mode & 0o777, 0o660);
      const [ga, gb, gc] = [await TestGuest.connect(a, MAC.a), await TestGuest.connect(b, MAC.b), await TestGuest.connect(c, MAC.c)];
      guests.push(ga, gb, gc);
      for (const p of [0, 1, 2]) await s.waitEvent((e) => e.event === 'ready' && e.port === p);

      // Unknown destination: flooded to both other ports.
      await ga.send(MAC.b, 'a-to-b-1');
      await gb.waitTag('a-to-b-1');
      await gc.waitTag('a-to-b-1');
      // b's MAC is learned now: b -> a is unicast; c does not see it. The
      // broadcast sent after it on the same ring arrives at c first.
      await gb.send(MAC.a, 'b-to-a');
      await gb.send(BCAST, 'b-bcast');
      await ga.waitTag('b-to-a');
      assert.deepEqual(await gc.waitTag('b-bcast'), ['a-to-b-1'], 'c saw the flood and the broadcast, not the unicast');
      // Filtering: a frame to a MAC behind its own ingress port goes nowhere.
      await ga.send(MAC.a, 'a-to-self');
      await ga.send(BCAST, 'a-bcast');
      assert.deepEqual(await gb.waitTag('a-bcast'), ['a-to-b-1'], 'b: the flood, then the broadcast; never a-to-self');
      assert.deepEqual(await gc.waitTag('a-bcast'), ['a-to-b-1', 'b-bcast']);
      assert.ok(!ga.got.includes('a-to-self'));

      await s.waitEvent((e) => e.event === 'mac-learned' && e.mac === MAC.b);
      const learned = s.events.filter((e) => e.event === 'mac-learned');
      assert.deepEqual(learned.map((e) => [e.mac, e.port, e.socket]), [[MAC.a, 0, a], [MAC.b, 1, b]]);

      const cl = await ControlClient.connect(ctl);
      const list = await cl.request({ op: 'list' });
      assert.equal(list.ok, true);
      const ports = list.ports as { port: number; connected: boolean; ready: boolean; mode: string; stats: { txFrames: number; rxFrames: number } }[];
      assert.deepEqual(ports.map((p) => [p.port, p.mode, p.connected, p.ready]), [[0, 'veb', true, true], [1, 'veb', true, true], [2, 'veb', true, true]]);
      assert.deepEqual(ports.map((p) => p.stats.txFrames), [3, 2, 0]);
      assert.deepEqual(ports.map((p) => p.stats.rxFrames), [2, 2, 3]);
      assert.deepEqual((list.macs as { mac: string; port: number }[]).map((m) => [m.mac, m.port]).sort(), [[MAC.a, 0], [MAC.b, 1]]);
      assert.equal(list.uplink, null);

      // A port added at run time carries traffic while the others keep theirs.
      await cl.request({ op: 'events' });
      const added = await cl.request({ op: 'add-port', socket: d, mode: 'veb', id: 'add-d' });
      assert.deepEqual(added, { ok: true, id: 'add-d', port: 3, socket: d, owner: { uid: 0, gid: 0 } });
      const gd = await TestGuest.connect(d, MAC.d);
      guests.push(gd);
      await s.waitEvent((e) => e.event === 'ready' && e.port === 3);
      await cl.waitEvent((e) => e.event === 'ready' && e.port === 3);
      await gd.send(MAC.a, 'd-to-a');
      await ga.waitTag('d-to-a');
      await ga.send(MAC.d, 'a-to-d');
      await gd.waitTag('a-to-d');
      assert.equal((await cl.request({ op: 'add-port', socket: d })).error, `socket ${d} is already port 3`);
      // Removing it closes its front-end and its socket; the others go on.
      assert.deepEqual(await cl.request({ op: 'remove-port', socket: d }), { ok: true, port: 3, socket: d });
      await gd.fe.expectClosed(5000);
      assert.ok(!existsSync(d), 'the removed port\'s socket is gone');
      await ga.send(MAC.b, 'a-to-b-2');
      await gb.waitTag('a-to-b-2');
      assert.deepEqual(namesOf(s.events, 3), ['port-added', 'connected', 'ready', 'disconnected', 'port-removed']);
      assert.equal((await cl.request({ op: 'remove-port', port: 3 })).error?.startsWith('no port 3'), true);
      assert.match(String((await cl.raw('{"op":"add-port"')).error), /not valid JSON/);

      // Disconnect and reconnect: events in order, the MAC is forgotten and learned again.
      ga.close();
      await s.waitEvent((e) => e.event === 'disconnected' && e.port === 0);
      const ga2 = await TestGuest.connect(a, MAC.a);
      guests.push(ga2);
      await s.waitEvent((e) => e.event === 'ready' && e.port === 0 && s.events.filter((x) => x.event === 'ready' && x.port === 0).length === 2);
      await ga2.send(MAC.b, 'a2-to-b');
      await gb.waitTag('a2-to-b');
      assert.deepEqual(namesOf(s.events, 0), ['port-added', 'connected', 'ready', 'disconnected', 'connected', 'ready']);
      // Learned again after the reconnect (the event crosses the worker and stdout: wait for it).
      await s.waitEvent((e) => e.event === 'mac-learned' && e.mac === MAC.a && s.events.filter((x) => x.event === 'mac-learned' && x.mac === MAC.a).length === 2);
      cl.close();
    } finally {
      for (const g of guests) g.close();
      const { code } = await s.stop();
      assert.equal(code, 0, s.log());
    }
    assert.ok(![a, b, c, ctl].some((p) => existsSync(p)), 'sockets removed on exit');
  });

  it('--client: connected, ready, disconnected and reconnected events in order', async () => {
    const path = join(dir, 'listening-fe.sock');
    const lfd = listenUnix(path);
    const s = new Serve(['--socket', path, '--client', '--events']);
    const accept = async (): Promise<VhostFrontend> => {
      let fd = -1;
      await VhostFrontend.until(() => (fd = acceptUnix(lfd)) >= 0, 10000, () => 'the back-end to connect');
      return new VhostFrontend(fd);
    };
    try {
      const fe = await accept();
      await fe.handshake({ memory: { name: 'qnh-client-1' } });
      await s.waitEvent((e) => e.event === 'ready');
      fe.close();
      await s.waitEvent((e) => e.event === 'disconnected');
      // The back-end retries; the second connection goes through setup again.
      const fe2 = await accept();
      await fe2.handshake({ memory: { name: 'qnh-client-2' } });
      await s.waitEvent((e) => e.event === 'ready' && s.events.filter((x) => x.event === 'ready').length === 2);
      assert.deepEqual(namesOf(s.events, 0), ['port-added', 'connected', 'ready', 'disconnected', 'connected', 'ready']);
      assert.ok(s.events.every((e) => e.socket === path));
      fe2.close();
    } finally {
      await s.stop();
      closeFd(lfd);
      rmSync(path, { force: true });
    }
  });

  it('control: a client port added at run time; a hostile control client only loses its own connection', async () => {
    const ctl = join(dir, 'ctl2.sock');
    const listening = join(dir, 'fe-listens.sock');
    const lfd = listenUnix(listening);
    const s = new Serve(['--control', ctl, '--events']);
    try {
      await s.ready([ctl]);
      const cl = await ControlClient.connect(ctl);
      const r = await cl.request({ op: 'add-port', socket: listening, client: true, mode: 'private' });
      assert.deepEqual(r, { ok: true, port: 0, socket: listening, owner: { uid: 0, gid: 0 } });
      let fd = -1;
      await VhostFrontend.until(() => (fd = acceptUnix(lfd)) >= 0, 10000, () => 'the switch to connect to our listening front-end');
      const fe = new VhostFrontend(fd);
      await fe.handshake({ memory: { name: 'qnh-ctl-client' } });
      await s.waitEvent((e) => e.event === 'ready' && e.port === 0);
      const list = await cl.request({ op: 'list' });
      assert.deepEqual((list.ports as { client: boolean; mode: string; ready: boolean }[]).map((p) => [p.client, p.mode, p.ready]), [[true, 'private', true]]);
      // Garbage and an endless line: error replies, then only that client is dropped.
      const bad = await ControlClient.connect(ctl);
      assert.match(String((await bad.raw('{"op":"list","extra":1}')).error), /unknown field "extra"/);
      assert.match(String((await bad.raw('x'.repeat(20000))).error), /longer than 16384 bytes/);
      await VhostFrontend.until(() => bad.isClosed, 5000, () => 'the hostile control client to be disconnected');
      assert.equal((await cl.request({ op: 'list' })).ok, true, 'the other control client is unaffected');
      fe.close();
      cl.close();
    } finally {
      const { code } = await s.stop();
      closeFd(lfd);
      rmSync(listening, { force: true });
      assert.equal(code, 0, s.log());
    }
    assert.ok(!existsSync(ctl), 'control socket removed on exit');
  });

  it('never removes a path that is not its own stale socket', async () => {
    const f = join(dir, 'file.sock');
    writeFileSync(f, 'not a socket');
    const s = new Serve(['--socket', f]);
    assert.equal(await s.exited, 10);
    assert.match(s.log(), /exists and is not a socket; not removing it/);
    assert.ok(existsSync(f));
    // A live socket of another server is not taken over either.
    const live = join(dir, 'live.sock');
    const first = new Serve(['--socket', live]);
    try {
      await first.ready([live]);
      const second = new Serve(['--socket', live]);
      assert.equal(await second.exited, 10);
      assert.match(second.log(), /another process listens on; not removing it/);
    } finally {
      await first.stop();
    }
    // A stale socket (its server was killed) is replaced.
    const stale = new Serve(['--socket', live]);
    await stale.ready([live]);
    stale.proc.kill('SIGKILL');
    await stale.exited;
    assert.ok(existsSync(live));
    const again = new Serve(['--socket', live]);
    await again.ready([live]);
    await again.stop();
  });

  it('uplink (veth in a namespace): private, vepa and veb semantics', async () => {
    await withNetNs(async (ns) => {
      ns.ip('link', 'add', 'up0', 'type', 'veth', 'peer', 'name', 'far0');
      ns.ip('link', 'set', 'up0', 'up');
      ns.ip('link', 'set', 'far0', 'up');
      const [a, b] = [join(dir, 'ua.sock'), join(dir, 'ub.sock')];
      const ctl = join(dir, 'uctl.sock');
      const s = new Serve(['--socket', a, '--socket', b, '--uplink', 'up0', '--mode', 'private', '--control', ctl, '--events'], ns);
      const peer = new PacketPeer(ns, 'far0');
      const guests: TestGuest[] = [];
      try {
        await Promise.all([s.ready([a, b, ctl]), peer.started()]);
        const [ga, gb] = [await TestGuest.connect(a, MAC.a), await TestGuest.connect(b, MAC.b)];
        guests.push(ga, gb);
        const onWire = (tag: string) => (f: Buffer): boolean => tagOf(f) === tag;
        const cl = await ControlClient.connect(ctl);

        // private: a's broadcast and its unicast to b go out of the uplink only.
        await gb.send(BCAST, 'p-b-hello');
        await peer.waitFor(onWire('p-b-hello'));
        await ga.send(MAC.b, 'p-a-to-b');
        await ga.send(BCAST, 'p-a-bcast');
        await peer.waitFor(onWire('p-a-to-b'));
        await peer.waitFor(onWire('p-a-bcast'));
        // The uplink reaches each port by MAC, and every port by broadcast;
        // a's frame reflected back by the outside never reaches b.
        peer.send(ethFrame(MAC.b, MAC.a, 'p-hairpin'));
        peer.send(ethFrame(MAC.a, MAC.h, 'p-h-to-a'));
        peer.send(ethFrame(BCAST, MAC.h, 'p-h-bcast'));
        await ga.waitTag('p-h-to-a');
        assert.deepEqual(await gb.waitTag('p-h-bcast'), [], 'b heard nothing from a, directly or reflected');
        await ga.waitTag('p-h-bcast');
        assert.ok(!ga.got.includes('p-b-hello'));

        // vepa: a -> b leaves through the uplink; reflected by the outside, it is delivered.
        for (const port of [0, 1]) assert.equal((await cl.request({ op: 'set-mode', port, mode: 'vepa' })).ok, true);
        await ga.send(MAC.b, 'v-a-to-b');
        const wire = await peer.waitFor(onWire('v-a-to-b'));
        peer.send(wire);
        assert.deepEqual(await gb.waitTag('v-a-to-b'), ['p-h-bcast'], 'b got it only once, as the hairpin');

        // veb with an uplink: a -> b is switched locally; the uplink does not see it.
        for (const port of [0, 1]) await cl.request({ op: 'set-mode', port, mode: 'veb' });
        await ga.send(MAC.b, 'e-a-to-b');
        await gb.waitTag('e-a-to-b');
        await ga.send(BCAST, 'e-a-bcast');
        await peer.waitFor(onWire('e-a-bcast'));
        assert.equal(peer.matching(onWire('e-a-to-b')).length, 0, 'known unicast between local veb ports stays local');
        const list = await cl.request({ op: 'list' });
        const up = list.uplink as { kind: string; device: string; stats: { txFrames: number; rxFrames: number } };
        assert.equal(up.kind, 'packet');
        assert.equal(up.device, 'up0');
        assert.ok(up.stats.txFrames >= 5 && up.stats.rxFrames >= 4, JSON.stringify(up));
        assert.ok(s.events.some((e) => e.event === 'mac-learned' && e.port === 'uplink' && e.mac === MAC.h));
        // One spelling for the uplink in events, `list` and stats (it was -1 in `list`).
        assert.equal((list.uplink as { port: unknown }).port, 'uplink');
        assert.deepEqual((list.macs as { mac: string; port: unknown }[]).filter((m) => m.mac === MAC.h).map((m) => m.port), ['uplink']);
        cl.close();
      } finally {
        for (const g of guests) g.close();
        peer.stop();
        await s.stop();
      }
    });
  });
});
