// The verdicts on endpoint records (lifecycle/liveness.ts): when gc may
// release one and when a new request may, on facts given rather than read
// from /proc.
import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import { deadBecause, reapableBecause, type LivenessFacts, type OwnerStatus } from '../../../src/lifecycle/liveness.js';
import type { EndpointRecord } from '../../../src/state/endpoints.js';
import type { OwnerRef } from '../../../src/state/owner.js';

const qemu: OwnerRef = { pid: 4242, startTime: '1000' };
const helper: OwnerRef = { pid: 4243, startTime: '1001' };

function rec(over: Partial<EndpointRecord> = {}): EndpointRecord {
  return {
    version: 1, id: 'ep-1', createdAt: '2026-12-07T07:00:00.000Z', owner: qemu, watcher: null, mode: 'passthrough',
    kernel: 'macvtap', transport: 'macvtap', ifname: 'macvtap0', mac: null, mtu: 1500, devicePath: null, owned: [],
    lifetime: 'owner', info: { state: 'active', setupBy: helper }, ...over,
  };
}

/** Facts where each listed pid has the given status (others alive), and whether the fd is held; records what was asked. */
function facts(status: Record<number, OwnerStatus>, fdHeld = true): LivenessFacts & { asked: string[] } {
  const asked: string[] = [];
  return {
    asked,
    ownerStatus: (o) => { asked.push(`pid ${o.pid}`); return status[o.pid] ?? 'alive'; },
    fdHeld: () => { asked.push('fd'); return fdHeld; },
  };
}

describe('gc: deadBecause', () => {
  it('an owner seen gone makes the endpoint dead; alive or unknown keeps it', () => {
    assert.equal(deadBecause(rec(), facts({ 4242: 'gone' })), 'owner pid 4242 is gone');
    assert.equal(deadBecause(rec(), facts({ 4242: 'alive' })), null);
    assert.equal(deadBecause(rec(), facts({ 4242: 'unknown' })), null, 'a process we cannot see may be a live guest');
  });

  it('a setup whose process died is dead whatever its lifetime', () => {
    for (const lifetime of ['owner', 'manual', 'fd'] as const) {
      assert.equal(deadBecause(rec({ lifetime, info: { state: 'setting-up', setupBy: helper } }), facts({ 4243: 'gone' })), 'its setup was interrupted');
    }
    assert.equal(deadBecause(rec({ info: { state: 'setting-up', setupBy: helper } }), facts({})), null, 'a setup still running');
    assert.equal(deadBecause(rec({ info: { state: 'active', setupBy: helper } }), facts({ 4243: 'gone' })), null, 'the helper exits after every finished setup');
  });

  it('manual endpoints live until down; fd endpoints until nobody holds the fd', () => {
    assert.equal(deadBecause(rec({ lifetime: 'manual', owner: null }), facts({ 4242: 'gone' }, false)), null);
    assert.equal(deadBecause(rec({ lifetime: 'fd', owner: null }), facts({}, true)), null);
    assert.equal(deadBecause(rec({ lifetime: 'fd', owner: null }), facts({}, false)), 'nobody holds its fd');
  });

  it('older records without lifetime: owner when there is one, else manual', () => {
    const { lifetime: _l, ...older } = rec();
    assert.equal(deadBecause(older as EndpointRecord, facts({ 4242: 'gone' })), 'owner pid 4242 is gone');
    assert.equal(deadBecause({ ...older, owner: null } as EndpointRecord, facts({}, false)), null);
  });

  it('scans for fd holders only for fd endpoints', () => {
    const f = facts({});
    deadBecause(rec(), f);
    assert.ok(!f.asked.includes('fd'), f.asked.join(', '));
  });
});

describe('a new request: reapableBecause', () => {
  it('takes an endpoint whose owner exited and whose fd nobody holds, or whose setup died', () => {
    assert.equal(reapableBecause(rec(), facts({ 4242: 'gone' }, false)), 'owner pid 4242 exited');
    assert.equal(reapableBecause(rec({ info: { state: 'setting-up', setupBy: helper } }), facts({ 4243: 'gone' })), 'its setup was interrupted');
  });

  it('never one whose owner lives or cannot be seen, and scans for fd holders only once the owner is gone', () => {
    const f = facts({ 4242: 'alive' }, false);
    assert.equal(reapableBecause(rec(), f), null);
    assert.ok(!f.asked.includes('fd'), f.asked.join(', '));
    assert.equal(reapableBecause(rec(), facts({ 4242: 'unknown' }, false)), null);
  });

  it('never one whose fd another process holds (handed on, the watcher has not adopted it yet)', () => {
    assert.equal(reapableBecause(rec(), facts({ 4242: 'gone' }, true)), null);
  });

  it('never a manual endpoint, nor an fd endpoint (its fd may be in flight: only the watcher, looking twice, may)', () => {
    assert.equal(reapableBecause(rec({ lifetime: 'manual', owner: qemu }), facts({ 4242: 'gone' }, false)), null);
    assert.equal(reapableBecause(rec({ lifetime: 'fd', owner: null }), facts({}, false)), null);
    assert.notEqual(deadBecause(rec({ lifetime: 'fd', owner: null }), facts({}, false)), null, 'where gc would');
  });
});
