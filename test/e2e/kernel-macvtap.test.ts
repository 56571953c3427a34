// The macvtap kernel on a real kernel: namespace A holds the parent (one end
// of a veth), namespace B the other end with an address. The test plays the
// guest on the macvtap fd: it writes an ICMP echo request to B and reads B's
// reply, in each of the four modes.
import assert from 'node:assert/strict';
import { execFileSync } from 'node:child_process';
import { mkdtempSync, readdirSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, before, describe, it } from 'node:test';
import { openMacvtapDevice } from '../../src/backends/kernel/macvtap.js';
import { ExitCode } from '../../src/errors.js';
import { isMulticastMac, parseMac } from '../../src/net/mac.js';
import { closeFd } from '../../src/sys/libc.js';
import { IFF_MULTI_QUEUE, IFF_TAP, IFF_VNET_HDR, tunGetIff } from '../../src/sys/tun.js';
import { NetNs } from '../lib/netns.js';
import {
  assertJournaled, icmpEcho, isEchoReply, readFrameUntil, releaseInNs, rxPackets, setNonBlocking, setupCrashingInNs, setupFailsInNs, setupInNs, writeFrame,
  type HostOverrides, type JsonRequest, type Setup,
} from './kernel-driver.test.js';

const GUEST_IP = '10.60.0.10';
const PEER_IP = '10.60.0.2';

describe('macvtap kernel', () => {
  let a: NetNs;
  let b: NetNs;
  let dir: string;
  let host: HostOverrides;
  let peerMac: string;
  let parentMac: string;
  let baseline: string[];
  before(() => {
    a = NetNs.create('qnhmA');
    b = NetNs.create('qnhmB');
    a.ip('link', 'add', 'vA', 'type', 'veth', 'peer', 'name', 'vB', 'netns', b.name);
    a.ip('link', 'set', 'vA', 'up');
    b.ip('addr', 'add', `${PEER_IP}/24`, 'dev', 'vB');
    b.ip('link', 'set', 'vB', 'up');
    a.addBridge('br0');
    a.ip('link', 'add', 'port0', 'type', 'veth', 'peer', 'name', 'port1');
    a.ip('link', 'set', 'port0', 'master', 'br0');
    peerMac = (b.linkDetails('vB') as { address: string }).address;
    parentMac = (a.linkDetails('vA') as { address: string }).address;
    dir = mkdtempSync(join(tmpdir(), 'qnh-macvtap-'));
    host = { stateDir: dir };
    baseline = a.links().sort();
  });
  after(() => {
    a?.destroy();
    b?.destroy();
    if (dir) rmSync(dir, { recursive: true, force: true });
  });

  const noLeftovers = (): void => assert.deepEqual(a.links().sort(), baseline, 'no interface may be left behind in A');

  async function pingPeer(s: Setup, vnetLen: number): Promise<void> {
    const fd = s.fds[0]!;
    for (const q of s.fds) setNonBlocking(q);
    const mac = s.ep.mac!;
    // B answers the guest without ARP, so the reply is the first frame for us.
    b.ip('neigh', 'replace', GUEST_IP, 'lladdr', mac, 'dev', 'vB', 'nud', 'permanent');
    const rx0 = rxPackets(b, 'vB');
    const id = 0x4000 + Math.floor(Math.random() * 0x3fff);
    writeFrame(fd, icmpEcho(mac, peerMac, GUEST_IP, PEER_IP, id, 1), vnetLen);
    // With several queues the kernel picks the queue of the reply by flow hash: read them all.
    const reply = await readFrameUntil(s.fds, vnetLen, (f) => isEchoReply(f, GUEST_IP, id));
    assert.ok(reply, 'the echo reply from B must be readable from the macvtap fds');
    assert.equal(reply.subarray(0, 6).toString('hex'), mac.replace(/:/g, ''), 'reply addressed to the guest MAC');
    assert.ok(rxPackets(b, 'vB') > rx0, "the guest's frame reached B");
  }

  const cases: { mode: string; req: Partial<JsonRequest>; vnetHdr: boolean; queues: number }[] = [
    { mode: 'vepa', req: { mode: 'vepa' }, vnetHdr: true, queues: 1 },
    { mode: 'bridge', req: { mode: 'veb' }, vnetHdr: false, queues: 1 },
    { mode: 'private', req: { mode: 'veb', params: { macvtapMode: 'private' } }, vnetHdr: true, queues: 2 },
    { mode: 'passthru', req: { mode: 'passthrough' }, vnetHdr: false, queues: 1 },
  ];
  for (const tc of cases) {
    it(`mode ${tc.mode}: fd answers TUNGETIFF, link shows the mode, frames flow both ways, release removes it`, async () => {
      const s = setupInNs(a, 'macvtap', { mode: 'veb', dev: 'vA', vnetHdr: tc.vnetHdr, queues: tc.queues, params: {}, ...tc.req }, host);
      try {
        assert.equal(s.fds.length, tc.queues);
        for (const fd of s.fds) {
          const iff = tunGetIff(fd);
          assert.ok(iff, 'TUNGETIFF must succeed');
          assert.equal(iff.name, s.ep.ifname);
          assert.ok(iff.flags & IFF_TAP);
          assert.equal((iff.flags & IFF_VNET_HDR) !== 0, tc.vnetHdr);
          assert.equal((iff.flags & IFF_MULTI_QUEUE) !== 0, tc.queues > 1);
        }
        assert.equal(s.ep.vnetHdr, tc.vnetHdr);
        const d = a.linkDetails(s.ep.ifname) as { linkinfo: { info_kind: string; info_data: { mode: string } }; mtu: number; operstate: string; flags: string[] };
        assert.equal(d.linkinfo.info_kind, 'macvtap');
        assert.equal(d.linkinfo.info_data.mode, tc.mode);
        assert.ok(d.flags.includes('UP'));
        assert.equal(d.mtu, 1500);
        assert.deepEqual(s.ep.owned.map((o) => o.kind), ['macvtap']);
        assertJournaled(s, 'macvtap');
        const mac = parseMac(s.ep.mac!)!;
        if (tc.mode === 'passthru') {
          assert.equal(s.ep.mac, parentMac, 'passthru without a MAC keeps the parent address');
        } else {
          assert.ok(s.ep.mac!.startsWith('52:54:00:') && !isMulticastMac(mac), `generated MAC ${s.ep.mac} must be in QEMU's 52:54:00 OUI, unicast`);
        }
        await pingPeer(s, tc.vnetHdr ? 12 : 0);
      } finally {
        for (const fd of s.fds) closeFd(fd);
        releaseInNs(a, 'macvtap', s.ep.owned, host);
      }
      assert.ok(!a.links().includes(s.ep.ifname), 'release removes the link');
      releaseInNs(a, 'macvtap', s.ep.owned, host); // idempotent
      noLeftovers();
    });
  }

  it('passthru: a second macvtap on the parent is refused with a clear error, the first keeps working', async () => {
    const first = setupInNs(a, 'macvtap', { mode: 'passthrough', dev: 'vA', vnetHdr: true, queues: 1, params: {}, mac: '52:54:00:aa:bb:01' }, host);
    try {
      assert.equal((a.linkDetails('vA') as { address: string }).address, '52:54:00:aa:bb:01', 'passthru puts the guest MAC on the parent');
      const again = setupFailsInNs(a, 'macvtap', { mode: 'passthrough', dev: 'vA', vnetHdr: true, queues: 1, params: {} }, host);
      assert.equal(again.exitCode, ExitCode.EXHAUSTED);
      assert.match(again.message, /parent device 'vA' is taken by passthru macvtap/);
      const other = setupFailsInNs(a, 'macvtap', { mode: 'vepa', dev: 'vA', vnetHdr: true, queues: 1, params: {} }, host);
      assert.equal(other.exitCode, ExitCode.EXHAUSTED);
      assert.deepEqual(a.links().sort(), [...baseline, first.ep.ifname].sort(), 'the refused setups left nothing');
      await pingPeer(first, 12);
    } finally {
      for (const fd of first.fds) closeFd(fd);
      releaseInNs(a, 'macvtap', first.ep.owned, host);
    }
    assert.equal((a.linkDetails('vA') as { address: string }).address, parentMac, "the kernel gives the parent its MAC back");
    noLeftovers();
  });

  it('passthru is refused on a parent that already has a macvtap', () => {
    const s = setupInNs(a, 'macvtap', { mode: 'vepa', dev: 'vA', vnetHdr: true, queues: 1, params: {} }, host);
    try {
      const e = setupFailsInNs(a, 'macvtap', { mode: 'passthrough', dev: 'vA', vnetHdr: true, queues: 1, params: {} }, host);
      assert.equal(e.exitCode, ExitCode.EXHAUSTED);
      assert.match(e.message, /already carries macvtap '.*'; passthru needs it alone/);
    } finally {
      for (const fd of s.fds) closeFd(fd);
      releaseInNs(a, 'macvtap', s.ep.owned, host);
    }
    noLeftovers();
  });

  it('a multicast or all-zero guest MAC is refused before anything is made', () => {
    for (const mac of ['01:00:5e:00:00:01', 'ff:ff:ff:ff:ff:ff', '00:00:00:00:00:00']) {
      const e = setupFailsInNs(a, 'macvtap', { mode: 'vepa', dev: 'vA', vnetHdr: true, queues: 1, params: {}, mac }, host);
      assert.equal(e.exitCode, ExitCode.USAGE, mac);
      assert.match(e.message, /multicast|all zero/);
    }
    noLeftovers();
  });

  it('a MAC already used on the parent is refused and rolled back', () => {
    const s = setupInNs(a, 'macvtap', { mode: 'veb', dev: 'vA', vnetHdr: true, queues: 1, params: {}, mac: '52:54:00:00:00:77' }, host);
    try {
      const e = setupFailsInNs(a, 'macvtap', { mode: 'veb', dev: 'vA', vnetHdr: true, queues: 1, params: {}, mac: '52:54:00:00:00:77' }, host);
      assert.equal(e.exitCode, ExitCode.USAGE);
      assert.match(e.message, /already used by another macvlan\/macvtap on 'vA'/);
      assert.deepEqual(e.undoFailures, []);
      assert.deepEqual(a.links().sort(), [...baseline, s.ep.ifname].sort());
    } finally {
      for (const fd of s.fds) closeFd(fd);
      releaseInNs(a, 'macvtap', s.ep.owned, host);
    }
    noLeftovers();
  });

  it('parent errors: missing, a bridge port, loopback', () => {
    const missing = setupFailsInNs(a, 'macvtap', { mode: 'vepa', dev: 'gone0', vnetHdr: true, queues: 1, params: {} }, host);
    assert.equal(missing.exitCode, ExitCode.NOT_FOUND);
    assert.match(missing.message, /parent device 'gone0' does not exist/);
    const port = setupFailsInNs(a, 'macvtap', { mode: 'vepa', dev: 'port0', vnetHdr: true, queues: 1, params: {} }, host);
    assert.equal(port.exitCode, ExitCode.CONFIG);
    assert.match(port.line, /'port0' is a port of bridge 'br0'.*use 'br0' as the parent/);
    const lo = setupFailsInNs(a, 'macvtap', { mode: 'vepa', dev: 'lo', vnetHdr: true, queues: 1, params: {} }, host);
    assert.equal(lo.exitCode, ExitCode.USAGE);
    assert.match(lo.message, /not an Ethernet device/);
    noLeftovers();
  });

  it('a bridge is a valid parent', () => {
    const s = setupInNs(a, 'macvtap', { mode: 'vepa', dev: 'br0', vnetHdr: true, queues: 1, params: { ifname: 'mvt-test0' } }, host);
    try {
      assert.equal(s.ep.ifname, 'mvt-test0');
      assert.ok(tunGetIff(s.fds[0]!));
    } finally {
      for (const fd of s.fds) closeFd(fd);
      releaseInNs(a, 'macvtap', s.ep.owned, host);
    }
    noLeftovers();
  });

  it('a failure after the link exists rolls it back (sysfs of another namespace)', () => {
    const e = setupFailsInNs(a, 'macvtap', { mode: 'vepa', dev: 'vA', vnetHdr: true, queues: 1, params: {} }, { ...host, netSysfsRoot: join(dir, 'no-sysfs') });
    assert.equal(e.exitCode, ExitCode.SETUP_FAILED);
    assert.match(e.line, /does not show this network namespace.*ip netns exec/);
    assert.deepEqual(e.undoFailures, []);
    noLeftovers();
  });

  it('the device is opened through a private node when /dev/tapN is missing or another device, leaving nothing behind', () => {
    const s = setupInNs(a, 'macvtap', { mode: 'vepa', dev: 'vA', vnetHdr: true, queues: 1, params: {} }, host);
    // Device numbers are global, so this process (in the host namespace) can open the namespace's macvtap.
    const [major, minor] = String(s.ep.info.chardev).split(':').map(Number) as [number, number];
    const fake = '/dev/tap99998';
    const opened: number[] = [];
    try {
      // Missing /dev/tapN.
      const r1 = openMacvtapDevice(99999, major, minor, 2, [dir, '/dev']);
      opened.push(...r1.fds);
      assert.equal(r1.devicePath, undefined);
      assert.equal(r1.fds.length, 2);
      for (const fd of r1.fds) assert.equal(tunGetIff(fd)?.name, s.ep.ifname);
      // /dev/tapN present but another device (as after an ifindex clash between namespaces).
      execFileSync('mknod', ['-m', '600', fake, 'c', '1', '3']);
      const r2 = openMacvtapDevice(99998, major, minor, 1, ['/dev']);
      opened.push(...r2.fds);
      assert.equal(r2.devicePath, undefined, 'a node with the wrong device number must not be used');
      assert.equal(tunGetIff(r2.fds[0]!)?.name, s.ep.ifname);
      assert.deepEqual(readdirSync('/dev').filter((n) => n.startsWith('.qnh-tap')), [], 'private nodes are unlinked at once');
      assert.deepEqual(readdirSync(dir).filter((n) => n.startsWith('.qnh-tap')), []);
    } finally {
      for (const fd of [...opened, ...s.fds]) closeFd(fd);
      rmSync(fake, { force: true });
      releaseInNs(a, 'macvtap', s.ep.owned, host);
    }
    noLeftovers();
  });

  it('a helper killed after any setup step leaves only journaled objects; releasing them leaves nothing', () => {
    const journalFile = join(dir, 'journal');
    let step = 1;
    for (; step < 20; step++) {
      const r = setupCrashingInNs(a, 'macvtap', { mode: 'vepa', dev: 'vA', vnetHdr: true, queues: 2, params: {} }, { ...host, journalFile }, step);
      if (!r.killed) {
        for (const fd of r.setup!.fds) closeFd(fd);
        releaseInNs(a, 'macvtap', r.setup!.ep.owned, host);
        break;
      }
      assert.ok(r.journal.every((j) => j.backend === 'macvtap'));
      releaseInNs(a, 'macvtap', r.journal.map((j) => j.obj), host);
      noLeftovers();
    }
    assert.ok(step > 1, 'setup was killed at least once');
    noLeftovers();
  });

  it('up (persist): devicePath is usable by path', () => {
    const s = setupInNs(a, 'macvtap', { mode: 'vepa', dev: 'vA', vnetHdr: true, queues: 1, params: {}, persist: true }, host);
    try {
      assert.match(s.ep.devicePath ?? '', /^\/dev\/tap\d+$/);
      assertJournaled(s, 'macvtap');
    } finally {
      for (const fd of s.fds) closeFd(fd);
      releaseInNs(a, 'macvtap', s.ep.owned, host);
    }
    noLeftovers();
  });

  it("release leaves a link alone that is no longer ours (same name, other ifindex)", () => {
    const s = setupInNs(a, 'macvtap', { mode: 'vepa', dev: 'vA', vnetHdr: true, queues: 1, params: {} }, host);
    for (const fd of s.fds) closeFd(fd);
    releaseInNs(a, 'macvtap', s.ep.owned, host);
    a.ip('link', 'add', 'link', 'vA', 'name', s.ep.ifname, 'type', 'macvtap', 'mode', 'vepa');
    try {
      releaseInNs(a, 'macvtap', s.ep.owned, host);
      assert.ok(a.links().includes(s.ep.ifname), "someone else's link with our old name survives");
    } finally {
      a.ip('link', 'del', s.ep.ifname);
    }
    noLeftovers();
  });
});
