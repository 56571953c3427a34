// Which endpoint record stands in the way of a new request (lifecycle/reap.ts):
// same parent device, interface name, MAC or VF; names only within one
// network namespace.
import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import type { HostContext } from '../../../src/backends/types.js';
import { ownNetns } from '../../../src/lifecycle/holders.js';
import { conflictOf, reapConflicting, wantedBy, type Wanted } from '../../../src/lifecycle/reap.js';
import { listEndpoints, releasedTombstone, saveEndpoint, type EndpointRecord } from '../../../src/state/endpoints.js';
import { ownerOf, type OwnerRef } from '../../../src/state/owner.js';

const NS = 'net:[4026531840]';
const OTHER_NS = 'net:[4026532999]';

function rec(over: Partial<EndpointRecord> = {}): EndpointRecord {
  return {
    version: 1, id: 'ep-1', createdAt: '2026-12-07T07:00:00.000Z', owner: { pid: 4242, startTime: '1000' }, watcher: null,
    mode: 'veb', kernel: 'macvtap', transport: 'macvtap', ifname: 'macvtap0', mac: '52:54:00:00:01:01', mtu: 1500, devicePath: null,
    owned: [{ backend: 'macvtap', obj: { kind: 'macvtap', data: { ifname: 'macvtap0', ifindex: 9, marker: 'qemu-net-helper:ep-1', parent: 'eth1', mode: 'bridge' } } }],
    lifetime: 'owner', info: { parent: 'eth1', mode: 'bridge', state: 'active', netns: NS }, ...over,
  };
}

const vfRec = rec({
  kernel: 'sriov', transport: 'macvtap', ifname: 'enp3s0v1', mac: '52:54:00:00:02:02',
  owned: [{ backend: 'sriov', obj: { kind: 'sriov-vf', data: { pci: '0000:03:10.1', pf: 'enp3s0', vfIndex: 1 } } }],
  info: { pf: 'enp3s0', vf: 1, pci: '0000:03:10.1', state: 'active', netns: NS },
});

describe('conflictOf', () => {
  it('the same parent device, interface name, MAC or VF conflicts; each says why', () => {
    assert.equal(conflictOf(rec(), { dev: 'eth1' }, NS), "it uses device 'eth1'");
    assert.equal(conflictOf(rec(), { ifname: 'macvtap0' }, NS), "it has interface 'macvtap0'");
    assert.equal(conflictOf(rec(), { mac: '52:54:00:00:01:01' }, NS), 'it has MAC 52:54:00:00:01:01');
    assert.equal(conflictOf(vfRec, { dev: 'enp3s0' }, NS), "it uses device 'enp3s0'", 'a VF endpoint stands on its PF');
    assert.equal(conflictOf(vfRec, { vfs: ['0000:03:10.1'] }, NS), 'it holds VF 0000:03:10.1');
    assert.equal(conflictOf(vfRec, { vfs: ['enp3s0'] }, NS), 'it holds VF 0000:03:10.1', 'a pool naming the PF');
  });

  it('a VLAN link the endpoint made on --dev counts as standing on --dev', () => {
    const r = rec({
      info: { parent: 'eth1.100', state: 'active', netns: NS },
      owned: [
        { backend: 'macvtap', obj: { kind: 'vlan', data: { ifname: 'eth1.100', ifindex: 8, marker: 'qemu-net-helper:ep-1', parent: 'eth1', vid: 100 } } },
        { backend: 'macvtap', obj: { kind: 'macvtap', data: { ifname: 'macvtap0', ifindex: 9, marker: 'qemu-net-helper:ep-1', parent: 'eth1.100' } } },
      ],
    });
    assert.equal(conflictOf(r, { dev: 'eth1' }, NS), "it uses device 'eth1'");
  });

  it('nothing in common, nothing wanted: no conflict', () => {
    const w: Wanted[] = [{}, { dev: 'eth2' }, { ifname: 'macvtap1' }, { mac: '52:54:00:00:01:02' }, { vfs: ['0000:03:10.2'] }, { dev: 'eth' }];
    for (const x of w) assert.equal(conflictOf(rec(), x, NS), null, JSON.stringify(x));
    assert.equal(conflictOf(vfRec, { vfs: ['0000:03:10.2', 'enp4s0'] }, NS), null);
  });

  it('names of another network namespace never clash; MACs and VFs are host-wide', () => {
    const there = rec({ info: { parent: 'eth1', state: 'active', netns: OTHER_NS } });
    assert.equal(conflictOf(there, { dev: 'eth1' }, NS), null);
    assert.equal(conflictOf(there, { ifname: 'macvtap0' }, NS), null);
    assert.equal(conflictOf(there, { mac: '52:54:00:00:01:01' }, NS), 'it has MAC 52:54:00:00:01:01');
    const vfThere = { ...vfRec, info: { ...vfRec.info, netns: OTHER_NS } };
    assert.equal(conflictOf(vfThere, { vfs: ['0000:03:10.1'] }, NS), 'it holds VF 0000:03:10.1');
    assert.equal(conflictOf(rec({ info: { parent: 'eth1' } }), { dev: 'eth1' }, NS), "it uses device 'eth1'", 'an older record without its namespace');
  });

  it('odd record values (numbers, empty strings, forged fields) are no names', () => {
    const odd = rec({ ifname: '', owned: [{ backend: 'x', obj: { kind: 'x', data: { ifname: 7, parent: '', pci: null } } }], info: { parent: 1, netns: NS } });
    assert.equal(conflictOf(odd, { dev: '' }, NS), null);
    assert.equal(conflictOf(odd, { ifname: '7' }, NS), null);
  });
});

describe('wantedBy', () => {
  it('takes --dev, params.ifname, the MAC (bytes or text, written one way) and the VF pool', () => {
    assert.deepEqual(wantedBy({ dev: 'eth1', mac: Buffer.from([0x52, 0x54, 0, 0, 1, 0xab]), params: { ifname: 'mv0' }, vfPool: ['0000:03:10.1'] }),
      { dev: 'eth1', ifname: 'mv0', mac: '52:54:00:00:01:ab', vfs: ['0000:03:10.1'] });
    assert.deepEqual(wantedBy({ mac: '52:54:00:00:01:AB' }), { mac: '52:54:00:00:01:ab' });
    assert.deepEqual(wantedBy({ dev: undefined, params: { ifname: 3 }, vfPool: [] }), {});
    assert.deepEqual(wantedBy({}, 1000), { portsOfUid: 1000 });
  });
});

describe('conflictOf: vhost-user switch ports', () => {
  const port = rec({
    kernel: 'vswitch', transport: 'vhost-user', ifname: 'port3', mac: null, uid: 1000,
    owned: [{ backend: 'vswitch', obj: { kind: 'vhost-user-port', data: { socket: '/run/qemu-net-helper/vhost-user/ep-1.sock', port: 3 } } }],
    info: { socket: '/run/qemu-net-helper/vhost-user/ep-1.sock', port: 3, state: 'active', netns: NS },
  });
  it('a port of the same user stands in the way (the switch bounds ports per user); another user\'s does not', () => {
    assert.match(conflictOf(port, { portsOfUid: 1000 }, NS)!, /switch port of uid 1000/);
    assert.equal(conflictOf(port, { portsOfUid: 1001 }, NS), null);
    assert.equal(conflictOf(rec({ uid: 1000 }), { portsOfUid: 1000 }, NS), null, 'a macvtap is no port');
    const { uid: _u, ...older } = port;
    assert.match(conflictOf(older as EndpointRecord, { portsOfUid: 0 }, NS)!, /uid 0/, 'records without uid are root\'s');
  });
});

describe('reapConflicting (records in a state directory, no kernel objects)', () => {
  const host = (stateDir: string) => ({ stateDir }) as HostContext;
  const dead: OwnerRef = { pid: process.pid, startTime: '1' }; // this pid, another start time: a process gone
  const save = (dir: string, id: string, over: Partial<EndpointRecord>): void => saveEndpoint(dir, rec({ id, owned: [], info: { parent: 'eth1', state: 'active', netns: ownNetns() }, ...over }));

  it('releases only what is in the way and whose owner is gone; leaves live, unknown-owner, manual and unrelated records', () => {
    const dir = mkdtempSync(join(tmpdir(), 'qnh-reap-unit-'));
    try {
      const live = ownerOf(process.pid);
      save(dir, 'dead-same-dev', { owner: dead });
      save(dir, 'live-same-dev', { owner: live });
      save(dir, 'dead-fd', { owner: null, lifetime: 'fd' });
      save(dir, 'dead-manual', { owner: dead, lifetime: 'manual' });
      save(dir, 'dead-other-dev', { owner: dead, info: { parent: 'eth9', state: 'active', netns: ownNetns() } });
      const r = reapConflicting({ dev: 'eth1' }, host(dir));
      assert.deepEqual(r.map((x) => [x.id, x.why]), [['dead-same-dev', `it uses device 'eth1' and owner pid ${process.pid} exited`]]);
      assert.deepEqual(r[0]!.report.failed, []);
      const left = listEndpoints(dir).map((e) => ('record' in e ? e.record.id : e.file)).sort();
      assert.deepEqual(left, ['dead-fd', 'dead-manual', 'dead-other-dev', 'live-same-dev']);
      assert.ok(releasedTombstone(dir, 'dead-same-dev'), 'released the way down does: a tombstone stays');
    } finally {
      rmSync(dir, { recursive: true, force: true });
    }
  });

  it('asks nothing of /proc and releases nothing when nothing is wanted or there are no records', () => {
    assert.deepEqual(reapConflicting({}, host('/nonexistent')), []);
    assert.deepEqual(reapConflicting({ dev: 'eth1' }, host('/nonexistent/qnh')), []);
  });
});
