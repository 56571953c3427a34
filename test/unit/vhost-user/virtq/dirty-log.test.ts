// The live-migration dirty log: every byte the device writes into guest
// memory (RX buffer, used entry, used index, avail_event) marks its 4 KiB
// page, by guest-physical address, and nothing else is marked.
import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import { ChainScratch, DirtyLog, SplitQueue, writeFrame, RX_OK } from '../../../../src/vhost-user/virtq/index.js';
import { MockGuest, MockVirtq } from '../../../lib/mock-driver.js';

const BUF = 0x100000;
const pages = (log: DirtyLog): number[] => {
  const out: number[] = [];
  log.bits.forEach((b, i) => { for (let k = 0; k < 8; k++) if (b & (1 << k)) out.push(i * 8 + k); });
  return out;
};

function setup(eventIdx: boolean): { q: SplitQueue; drv: MockVirtq; log: DirtyLog } {
  const g = new MockGuest([{ gpa: 0, size: 0x10000, ua: 0x7f0000000000 }, { gpa: BUF, size: 0x100000, ua: 0x7f1000000000 }], { guard: 64 });
  const drv = MockVirtq.at(g, 256, 0x1000);
  const q = new SplitQueue(256, { eventIdx, indirectDesc: true });
  assert.equal(q.setRings(g.mem, drv.descUA, drv.availUA, drv.usedUA), null);
  const log = new DirtyLog(new Uint8Array(64)); // 512 pages: 2 MiB of guest memory
  q.log = log;
  q.logUsedGpa = drv.usedGpa;
  return { q, drv, log };
}

describe('dirty log', () => {
  it('marks pages by guest-physical address, atomically, and ignores what lies beyond the log', () => {
    const log = new DirtyLog(new Uint8Array(2));
    log.mark(0x1fff, 2); // crosses pages 1 and 2
    log.mark(0x5000, 1);
    log.mark(16 * 4096, 4096); // page 16: beyond a 2-byte log
    log.mark(0, 0);
    log.mark(-4096, 10);
    assert.deepEqual(pages(log), [1, 2, 5]);
  });

  it('an RX frame logs its buffer pages, the used entry and the used index; nothing when logging is off', () => {
    for (const eventIdx of [true, false]) {
      const { q, drv, log } = setup(eventIdx);
      // A 3000-byte buffer from 0x1ff00: crosses the page boundary at BUF + 0x20000.
      drv.addChain([{ addr: BUF + 0x1ff00, len: 3000, write: true }]);
      drv.addChain([{ addr: BUF + 0x40000, len: 2048, write: true }]);
      const frame = new Uint8Array(1000).fill(7);
      assert.equal(writeFrame(q, new ChainScratch(), frame, 0, frame.length, 12, true), RX_OK);
      q.flushUsed();
      const usedPage = Math.floor(drv.usedGpa / 4096);
      // 12 + 1000 bytes from BUF + 0x1ff00 reach into the next page.
      assert.deepEqual(pages(log), [usedPage, (BUF + 0x1f000) / 4096, (BUF + 0x20000) / 4096].sort((a, b) => a - b));
      // Re-enabling notifications writes used flags or avail_event: logged too.
      log.bits.fill(0);
      q.enableNotify();
      assert.deepEqual(pages(log), [usedPage]);
      // Logging off: the next frame marks nothing.
      log.bits.fill(0);
      q.log = null;
      assert.equal(writeFrame(q, new ChainScratch(), frame, 0, 60, 12, true), RX_OK);
      q.flushUsed();
      assert.deepEqual(pages(log), []);
    }
  });
});
