// Which endpoint record stands in the way of a new request (lifecycle/reap.ts):
// same parent device, interface name, MAC or VF; names only within one
// network namespace.
import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import { conflictOf, wantedBy, type Wanted } from '../../src/lifecycle/reap.js';
import type { EndpointRecord } from '../../src/state/endpoints.js';

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
  });
});
