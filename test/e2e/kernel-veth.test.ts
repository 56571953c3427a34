// The veth kernel on a real kernel: the host end on a bridge, in another
// namespace, or alone; errors; release from the JSON record.
import assert from 'node:assert/strict';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, before, describe, it } from 'node:test';
import { ExitCode } from '../../src/errors.js';
import { NetNs } from '../lib/netns.js';
import { assertJournaled, releaseInNs, rxPackets, setupCrashingInNs, setupFailsInNs, setupInNs, type HostOverrides, type JsonRequest } from './kernel-driver.test.js';

interface Link { ifname: string; master?: string; mtu: number; flags: string[]; address: string; linkinfo?: { info_kind?: string } }

describe('veth kernel', () => {
  let h: NetNs;
  let other: NetNs;
  let dir: string;
  let host: HostOverrides;
  let baseline: string[];
  const req = (r: Partial<JsonRequest>): JsonRequest => ({ mode: 'bridge', vnetHdr: false, queues: 1, params: {}, ...r });
  before(() => {
    h = NetNs.create('qnhvH');
    other = NetNs.create('qnhvC');
    h.addBridge('br0', '10.70.0.1/24', 9000);
    h.ip('link', 'add', 'notbr0', 'type', 'veth', 'peer', 'name', 'notbr1');
    dir = mkdtempSync(join(tmpdir(), 'qnh-veth-'));
    host = { stateDir: dir };
    baseline = h.links().sort();
  });
  after(() => {
    h?.destroy();
    other?.destroy();
    if (dir) rmSync(dir, { recursive: true, force: true });
  });
  const noLeftovers = (): void => assert.deepEqual(h.links().sort(), baseline, 'no interface may be left behind');

  it('host end on the bridge, endpoint end here; both up, bridge MTU; frames from the bridge reach the endpoint end; release removes the pair', () => {
    const s = setupInNs(h, 'veth', req({ dev: 'br0', mac: '52:54:00:00:70:01' }), host);
    assert.equal(s.fds.length, 0, 'veth hands out no fd: the socket transport opens its own');
    assert.equal(s.ep.kernel, 'veth');
    assertJournaled(s, 'veth');
    assert.equal(s.ep.mac, '52:54:00:00:70:01');
    const hostEnd = String(s.ep.info.hostIfname);
    const e = h.linkDetails(s.ep.ifname) as unknown as Link;
    const p = h.linkDetails(hostEnd) as unknown as Link;
    assert.equal(e.linkinfo?.info_kind, 'veth');
    assert.equal(p.linkinfo?.info_kind, 'veth');
    assert.equal(p.master, 'br0');
    assert.equal(e.master, undefined);
    assert.ok(e.flags.includes('UP') && p.flags.includes('UP'));
    assert.equal(e.mtu, 9000);
    assert.equal(p.mtu, 9000);
    assert.ok(p.address.startsWith('fe:'), 'bridge port address starts with fe so the bridge keeps its MAC');
    assert.equal(s.ep.mtu, 9000);
    // Unknown unicast from the bridge is flooded to its ports: the endpoint end must see it.
    h.ip('neigh', 'replace', '10.70.0.9', 'lladdr', '52:54:00:00:70:01', 'dev', 'br0', 'nud', 'permanent');
    const rx0 = rxPackets(h, s.ep.ifname);
    try { h.exec('busybox', 'ping', '-c', '1', '-W', '1', '10.70.0.9'); } catch { /* nobody answers: only the frame matters */ }
    assert.ok(rxPackets(h, s.ep.ifname) > rx0, 'a frame sent on the bridge arrives at the endpoint end');
    releaseInNs(h, 'veth', s.ep.owned, host);
    assert.ok(!h.links().includes(s.ep.ifname));
    assert.ok(!h.links().includes(hostEnd));
    releaseInNs(h, 'veth', s.ep.owned, host); // idempotent
    try { h.ip('neigh', 'del', '10.70.0.9', 'dev', 'br0'); } catch { /* flushed with the bridge's carrier */ }
    noLeftovers();
  });

  it('host end moved into another namespace and renamed; release removes both ends', () => {
    const s = setupInNs(h, 'veth', req({ params: { netns: other.name, peerIfname: 'eth0', ifname: 'vguest0' } }), host);
    assert.equal(s.ep.ifname, 'vguest0');
    assert.equal(s.ep.info.netns, other.name);
    assert.equal(s.ep.info.hostIfname, 'eth0');
    const peer = other.linkDetails('eth0') as unknown as Link;
    assert.equal(peer.linkinfo?.info_kind, 'veth');
    assert.ok(peer.flags.includes('UP'));
    assert.ok(h.links().includes('vguest0'));
    releaseInNs(h, 'veth', s.ep.owned, host);
    assert.ok(!other.links().includes('eth0'), 'the end in the other namespace goes with the pair');
    noLeftovers();
  });

  it('neither bridge nor namespace: both ends here, up', () => {
    const s = setupInNs(h, 'veth', req({}), host);
    const p = h.linkDetails(String(s.ep.info.hostIfname)) as unknown as Link;
    assert.ok(p.flags.includes('UP'));
    assert.equal(s.ep.mtu, 1500);
    releaseInNs(h, 'veth', s.ep.owned, host);
    noLeftovers();
  });

  it('a helper killed after any setup step leaves only journaled objects; releasing them leaves nothing', () => {
    const journalFile = join(dir, 'journal');
    let step = 1;
    for (; step < 20; step++) {
      const r = setupCrashingInNs(h, 'veth', req({ dev: 'br0' }), { ...host, journalFile }, step);
      if (!r.killed) {
        releaseInNs(h, 'veth', r.setup!.ep.owned, host);
        break;
      }
      releaseInNs(h, 'veth', r.journal.map((j) => j.obj), host);
      noLeftovers();
    }
    assert.ok(step > 1);
    noLeftovers();
  });

  it('errors: not a bridge, missing bridge, missing namespace, both, a taken name (rolled back)', () => {
    const notBr = setupFailsInNs(h, 'veth', req({ dev: 'notbr0' }), host);
    assert.equal(notBr.exitCode, ExitCode.NOT_FOUND);
    assert.match(notBr.message, /'notbr0' is not a bridge/);
    const gone = setupFailsInNs(h, 'veth', req({ dev: 'gone0' }), host);
    assert.equal(gone.exitCode, ExitCode.NOT_FOUND);
    assert.match(gone.message, /bridge 'gone0' does not exist/);
    const nons = setupFailsInNs(h, 'veth', req({ params: { netns: 'qnh-no-such-ns' } }), host);
    assert.equal(nons.exitCode, ExitCode.NOT_FOUND);
    assert.match(nons.message, /network namespace 'qnh-no-such-ns' does not exist/);
    const both = setupFailsInNs(h, 'veth', req({ dev: 'br0', params: { netns: other.name } }), host);
    assert.equal(both.exitCode, ExitCode.USAGE);
    const taken = setupFailsInNs(h, 'veth', req({ dev: 'br0', params: { ifname: 'vx0', hostIfname: 'notbr0' } }), host);
    assert.equal(taken.exitCode, ExitCode.CONFIG);
    assert.match(taken.message, /already exists/);
    // Fails after the pair exists (the other namespace already has eth0): the rollback removes the pair.
    other.ip('link', 'add', 'eth1', 'type', 'veth', 'peer', 'name', 'eth2');
    const clash = setupFailsInNs(h, 'veth', req({ params: { netns: other.name, peerIfname: 'eth1' } }), host);
    assert.notEqual(clash.exitCode, 0);
    assert.deepEqual(clash.undoFailures, []);
    other.ip('link', 'del', 'eth1');
    noLeftovers();
  });
});
