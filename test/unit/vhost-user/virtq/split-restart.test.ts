// Split rings across a back-end restart: a new queue resumes from the
// guest's used index, and its first signal decision cannot trust what the dead
// back-end did or did not signal.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { ChainScratch } from '../../../../src/vhost-user/virtq/chain.js';
import { SplitQueue } from '../../../../src/vhost-user/virtq/split.js';
import { MockGuest, MockVirtq } from '../../../lib/mock-driver.js';

const A = 0x0, C = 0x200000;
const REGIONS = [{ gpa: A, size: 0x10000, ua: 0x7f0000000000 }, { gpa: C, size: 0x8000, ua: 0x500000000 }];

function setup() {
  const g = new MockGuest(REGIONS);
  const drv = MockVirtq.at(g, 8, A + 0x1000);
  const q = new SplitQueue(8, { eventIdx: true, indirectDesc: true });
  assert.equal(q.setRings(g.mem, drv.descUA, drv.availUA, drv.usedUA), null);
  return { g, drv, q, chain: new ChainScratch() };
}

test('EVENT_IDX after a back-end restart: entries the dead back-end published but never signalled do not stall the ring', () => {
  const s = setup();
  // The guest consumed up to 5 and asked to hear about the next entry (used_event 5).
  s.q.setBase(5);
  s.drv.availIdx = 5;
  s.drv.usedSeen = 5;
  s.drv.setUsedEvent(5);
  // The old back-end completes one chain (used.idx 6) and dies before signalling it.
  const h0 = s.drv.addChain([{ addr: C, len: 8 }]);
  assert.equal(s.q.popChain(s.chain), h0);
  s.q.pushUsed(h0, 0);
  s.q.flushUsed();
  // The new back-end resumes from used.idx; the guest still waits with used_event 5.
  const q2 = new SplitQueue(8, { eventIdx: true, indirectDesc: true });
  assert.equal(q2.setRings(s.g.mem, s.drv.descUA, s.drv.availUA, s.drv.usedUA), null);
  q2.setBase(5);
  q2.resyncFromUsed();
  assert.equal(q2.lastUsed, 6);
  const complete = () => {
    const h = s.drv.addChain([{ addr: C, len: 8 }]);
    assert.equal(q2.popChain(s.chain), h);
    q2.pushUsed(h, 0);
    q2.flushUsed();
  };
  complete(); // 6 -> 7: used_event 5 is behind old (6), the spec test alone would stay silent forever
  assert.equal(q2.needsNotify(), true, 'the first completion after the restart is signalled');
  // From then on the spec test applies again.
  complete();
  assert.equal(q2.needsNotify(), false, 'used_event 5 not crossed between 7 and 8');
  assert.equal(s.drv.takeUsed().length, 3, 'the guest reads all three');
  s.drv.setUsedEvent(8);
  complete();
  assert.equal(q2.needsNotify(), true);
  // Nothing published: no decision is due, and none is used up.
  const q3 = new SplitQueue(8, { eventIdx: true, indirectDesc: true });
  q3.setRings(s.g.mem, s.drv.descUA, s.drv.availUA, s.drv.usedUA);
  q3.resyncFromUsed();
  assert.equal(q3.needsNotify(), false);
  const h = s.drv.addChain([{ addr: C, len: 8 }]);
  assert.equal(q3.popChain(s.chain), h);
  q3.pushUsed(h, 0);
  q3.flushUsed();
  assert.equal(q3.needsNotify(), true);
});
