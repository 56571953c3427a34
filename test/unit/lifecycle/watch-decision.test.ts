// The watcher's decisions (lifecycle/watch-decision.ts): when it waits,
// follows the fd to a new owner, releases, or stops, from what it saw.
import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import { watchable, watchStep, type WatchLook } from '../../../src/lifecycle/watch-decision.js';
import type { OwnerRef } from '../../../src/state/owner.js';

const qemu: OwnerRef = { pid: 4242, startTime: '1000' };
const next: OwnerRef = { pid: 5000, startTime: '2000' };

function look(over: Partial<WatchLook> = {}): WatchLook & { scans: number } {
  const l = {
    scans: 0, recordGone: false, exited: false, owner: qemu, hasTarget: true, orphaned: 0,
    ownerHolds: () => true, nextHolder: () => { l.scans++; return null; }, ...over,
  };
  return l;
}

describe('watchable', () => {
  it('an owner or an fd to follow; manual endpoints wait for down', () => {
    assert.equal(watchable({ owner: qemu, lifetime: 'owner' }), true);
    assert.equal(watchable({ owner: null, lifetime: 'fd' }), true);
    assert.equal(watchable({ owner: null, lifetime: 'manual' }), false);
    assert.equal(watchable({ owner: null }), false, 'an older record without owner is manual');
  });
});

describe('watchStep', () => {
  it('stops when the record went (down, gc, or a request that reaped it)', () => {
    assert.deepEqual(watchStep(look({ recordGone: true, exited: true })), { kind: 'stop' });
  });

  it('keeps waiting while the owner holds the fd, without scanning /proc', () => {
    const l = look({ orphaned: 1 });
    assert.deepEqual(watchStep(l), { kind: 'wait', orphaned: 0 });
    assert.equal(l.scans, 0);
  });

  it('releases at once when the owner exited and nobody else holds the fd', () => {
    assert.deepEqual(watchStep(look({ exited: true, ownerHolds: () => { throw new Error('not asked after exit'); } })), { kind: 'release' });
  });

  it('adopts the process the fd was handed to (libvirtd -> QEMU), also after the first owner exited', () => {
    assert.deepEqual(watchStep(look({ ownerHolds: () => false, nextHolder: () => next })), { kind: 'adopt', owner: next });
    assert.deepEqual(watchStep(look({ exited: true, nextHolder: () => next })), { kind: 'adopt', owner: next });
  });

  it('without a known owner, releases only after nobody held the fd twice in a row (an fd in flight is not dead)', () => {
    const first = watchStep(look({ owner: null }));
    assert.deepEqual(first, { kind: 'wait', orphaned: 1 });
    assert.deepEqual(watchStep(look({ owner: null, orphaned: 1 })), { kind: 'release' });
    assert.deepEqual(watchStep(look({ ownerHolds: () => false })), { kind: 'wait', orphaned: 1 }, 'the owner dropped the fd but has not exited');
  });

  it('without an fd to follow, only the owner\'s exit releases', () => {
    assert.deepEqual(watchStep(look({ hasTarget: false, orphaned: 5 })), { kind: 'wait', orphaned: 5 });
    assert.deepEqual(watchStep(look({ hasTarget: false, exited: true })), { kind: 'release' });
  });
});
