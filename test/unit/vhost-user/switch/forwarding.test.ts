// The learning switch without rings: MAC table learning and ageing, and the
// whole forwarding decision table for veb, vepa and private ports.
import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import { isGroupMac, macAt, MacTable, macToString, parseMac, UNKNOWN, UPLINK } from '../../../../src/vhost-user/switch/fdb.js';
import { decide, modeCode, PRIVATE, Topology, VEB, VEPA } from '../../../../src/vhost-user/switch/forwarding.js';

const mac = (s: string): number => parseMac(s)!;
const A = mac('52:54:00:00:00:0a');
const B = mac('52:54:00:00:00:0b');
const C = mac('52:54:00:00:00:0c');
const H = mac('02:00:00:00:00:01'); // a host behind the uplink
const BCAST = mac('ff:ff:ff:ff:ff:ff');
const MCAST = mac('33:33:00:00:00:01');

function egress(fdb: MacTable, topo: Topology, ingress: number, dst: number, src: number, now = 0): number[] {
  const out: number[] = [];
  const n = decide(fdb, topo, ingress, dst, src, now, out);
  return out.slice(0, n).sort((x, y) => x - y);
}

function topo3(modes: number[], uplink = true): Topology {
  const t = new Topology();
  modes.forEach((m, i) => t.set(i, m));
  t.hasUplink = uplink;
  return t;
}

describe('MAC helpers', () => {
  it('reads, prints and classifies MACs', () => {
    const b = new Uint8Array([0, 0xff, 0xfe, 0x81, 0x02, 0x03, 0x04, 0x05]);
    assert.equal(macToString(macAt(b, 1)), 'ff:fe:81:02:03:04');
    assert.equal(macToString(macAt(b, 2)), 'fe:81:02:03:04:05');
    assert.equal(isGroupMac(BCAST), true);
    assert.equal(isGroupMac(MCAST), true);
    assert.equal(isGroupMac(A), false);
    assert.equal(isGroupMac(mac('fe:00:00:00:00:00')), false);
    assert.equal(parseMac('52:54:00:00:00'), null);
    assert.equal(parseMac('zz:54:00:00:00:00'), null);
  });
});

describe('MAC table', () => {
  it('learns, refreshes, moves and ages', () => {
    const t = new MacTable(1000);
    assert.equal(t.learn(A, 0, 0), 'new');
    assert.equal(t.learn(A, 0, 500), 'refreshed');
    assert.equal(t.lookup(A, 1400), 0, 'refreshed at 500: still alive at 1400');
    assert.equal(t.learn(A, 1, 1400), 'moved');
    assert.equal(t.lookup(A, 1500), 1);
    assert.equal(t.lookup(A, 2400), UNKNOWN, 'aged out 1000 ms after it was last seen');
    assert.equal(t.size, 0, 'lookup removed the aged entry');
  });

  it('never learns group or zero MACs', () => {
    const t = new MacTable();
    assert.equal(t.learn(BCAST, 0, 0), 'ignored');
    assert.equal(t.learn(MCAST, 0, 0), 'ignored');
    assert.equal(t.learn(0, 0, 0), 'ignored');
    assert.equal(t.size, 0);
  });

  it('does not let the uplink steal a fresh local MAC (hairpinned or looped frames), but does once it aged', () => {
    const t = new MacTable(1000);
    t.learn(A, 2, 0);
    assert.equal(t.learn(A, UPLINK, 10), 'ignored');
    assert.equal(t.lookup(A, 20), 2);
    assert.equal(t.learn(A, UPLINK, 1500), 'moved', 'aged: the guest really is behind the uplink now');
    // Local ports move MACs freely (a guest re-plugged or migrated to another port).
    assert.equal(t.learn(A, 1, 1600), 'moved');
  });

  it('a full table learns nothing new and keeps what it has', () => {
    const t = new MacTable(1000, 2);
    t.learn(A, 0, 0);
    t.learn(B, 1, 0);
    assert.equal(t.learn(C, 2, 0), 'full');
    assert.equal(t.lookup(C, 0), UNKNOWN);
    assert.equal(t.lookup(A, 0), 0);
    assert.equal(t.sweep(5000), 2);
    assert.equal(t.learn(C, 2, 5000), 'new');
  });

  it('flushes a port and lists live entries', () => {
    const t = new MacTable(1000);
    t.learn(A, 0, 0);
    t.learn(B, 0, 0);
    t.learn(C, 1, 0);
    assert.equal(t.flushPort(0), 2);
    assert.deepEqual(t.entries(100), [{ mac: '52:54:00:00:00:0c', port: 1, ageMs: 100 }]);
  });
});

describe('forwarding decision', () => {
  it('veb: known unicast to its port, unknown and group flooded to the other veb ports and the uplink', () => {
    const fdb = new MacTable();
    const t = topo3([VEB, VEB, VEB]);
    assert.deepEqual(egress(fdb, t, 0, B, A), [UPLINK, 1, 2], 'unknown: flood');
    fdb.learn(B, 1, 0);
    assert.deepEqual(egress(fdb, t, 0, B, A), [1]);
    assert.deepEqual(egress(fdb, t, 0, BCAST, A), [UPLINK, 1, 2]);
    assert.deepEqual(egress(fdb, t, 2, MCAST, C), [UPLINK, 0, 1]);
    fdb.learn(H, UPLINK, 0);
    assert.deepEqual(egress(fdb, t, 0, H, A), [UPLINK]);
    fdb.learn(A, 0, 0);
    assert.deepEqual(egress(fdb, t, 0, A, A), [], 'filtered: destination behind the ingress port');
  });

  it('veb without uplink: two ports are a patch (flooding reaches exactly the other port)', () => {
    const fdb = new MacTable();
    const t = topo3([VEB, VEB], false);
    assert.deepEqual(egress(fdb, t, 0, B, A), [1]);
    assert.deepEqual(egress(fdb, t, 1, BCAST, B), [0]);
    const one = topo3([VEB], false);
    assert.deepEqual(egress(fdb, one, 0, BCAST, A), [], 'one port, no uplink: a sink');
  });

  it('private: a port reaches only the uplink; the uplink reaches every port; no hairpin between ports', () => {
    const fdb = new MacTable();
    const t = topo3([PRIVATE, PRIVATE, PRIVATE]);
    fdb.learn(A, 0, 0);
    fdb.learn(B, 1, 0);
    assert.deepEqual(egress(fdb, t, 0, B, A), [UPLINK]);
    assert.deepEqual(egress(fdb, t, 0, BCAST, A), [UPLINK]);
    assert.deepEqual(egress(fdb, t, UPLINK, B, H), [1], 'from the uplink by destination MAC');
    assert.deepEqual(egress(fdb, t, UPLINK, BCAST, H), [0, 1, 2], 'uplink broadcast reaches every port');
    assert.deepEqual(egress(fdb, t, UPLINK, B, A), [], 'a frame of port 0 hairpinned back: not to port 1');
    assert.deepEqual(egress(fdb, t, UPLINK, BCAST, A), [], 'nor as a broadcast');
    assert.deepEqual(egress(fdb, topo3([PRIVATE, PRIVATE], false), 0, B, A), [], 'private without uplink: nowhere');
  });

  it('vepa: everything to the uplink; from the uplink by destination MAC, hairpin included', () => {
    const fdb = new MacTable();
    const t = topo3([VEPA, VEPA, VEPA]);
    fdb.learn(A, 0, 0);
    fdb.learn(B, 1, 0);
    assert.deepEqual(egress(fdb, t, 0, B, A), [UPLINK], 'to a known local port: still out of the uplink');
    assert.deepEqual(egress(fdb, t, 0, BCAST, A), [UPLINK]);
    assert.deepEqual(egress(fdb, t, UPLINK, B, A), [1], 'hairpinned by the external switch: delivered');
    assert.deepEqual(egress(fdb, t, UPLINK, BCAST, A), [1, 2], 'reflected broadcast: every port but the sender');
    assert.deepEqual(egress(fdb, t, UPLINK, A, A), [], 'never back to the sender');
  });

  it('mixed modes per port', () => {
    const fdb = new MacTable();
    const t = topo3([VEB, VEPA, PRIVATE, VEB]);
    fdb.learn(A, 0, 0);
    fdb.learn(B, 1, 0);
    fdb.learn(C, 2, 0);
    assert.deepEqual(egress(fdb, t, 0, BCAST, A), [UPLINK, 3], 'veb floods to veb ports and the uplink only');
    assert.deepEqual(egress(fdb, t, 0, B, A), [UPLINK], 'veb to a vepa port goes through the external switch');
    assert.deepEqual(egress(fdb, t, UPLINK, B, A), [1], '... and is delivered when it comes back');
    assert.deepEqual(egress(fdb, t, UPLINK, BCAST, A), [1], 'a veb broadcast reflected: only to vepa ports (veb ones had it)');
    assert.deepEqual(egress(fdb, t, UPLINK, C, A), [], 'a private port never hears another port');
    assert.deepEqual(egress(fdb, t, 2, A, C), [UPLINK]);
    assert.deepEqual(egress(fdb, t, UPLINK, A, C), [], 'a private port\'s frame reflected to a veb port: dropped');
  });

  it('frames on a removed port or to a MAC on a removed port', () => {
    const fdb = new MacTable();
    const t = topo3([VEB, VEB, VEB], false);
    fdb.learn(B, 1, 0);
    t.remove(1);
    assert.deepEqual(egress(fdb, t, 1, A, B), [], 'ingress gone');
    assert.deepEqual(egress(fdb, t, 0, B, A), [2], 'stale entry: flooded');
  });

  it('mode names', () => {
    assert.equal(modeCode('veb'), VEB);
    assert.equal(modeCode('vepa'), VEPA);
    assert.equal(modeCode('private'), PRIVATE);
    assert.throws(() => modeCode('bridge'), /not one of veb, vepa, private/);
  });
});
