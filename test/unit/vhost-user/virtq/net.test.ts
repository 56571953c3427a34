import { test } from 'node:test';
import assert from 'node:assert/strict';
import { BAD_SHORT_RX, ChainScratch } from '../../../../src/vhost-user/virtq/chain.js';
import { copyBytes } from '../../../../src/vhost-user/virtq/copy.js';
import { Forwarder } from '../../../../src/vhost-user/virtq/forward.js';
import {
  MAX_FRAME_LEN, RX_NO_BUFFERS, RX_OK, RX_TOO_BIG, netHeaderLen, readFrame, writeFrame,
} from '../../../../src/vhost-user/virtq/net.js';
import { SplitQueue } from '../../../../src/vhost-user/virtq/split.js';
import { MockGuest, MockVirtq } from '../../../lib/mock-driver.js';

const RING = 0x1000, BUF = 0x10000;

function guest(size = 16, shared = true) {
  const g = new MockGuest([
    { gpa: 0, size: 0x8000, ua: 0x7f0000000000 },
    { gpa: BUF, size: 0x30000, ua: 0x7f1000000000 },
  ], { shared });
  const drv = MockVirtq.at(g, size, RING);
  const q = new SplitQueue(size, { eventIdx: true, indirectDesc: true });
  assert.equal(q.setRings(g.mem, drv.descUA, drv.availUA, drv.usedUA), null);
  return { g, drv, q, chain: new ChainScratch() };
}

function pattern(n: number, salt = 0): Uint8Array {
  const b = new Uint8Array(n);
  for (let i = 0; i < n; i++) b[i] = (i * 31 + salt) & 0xff;
  return b;
}

test('netHeaderLen', () => {
  assert.equal(netHeaderLen(true, false), 12);
  assert.equal(netHeaderLen(false, true), 12);
  assert.equal(netHeaderLen(false, false), 10);
});

test('copyBytes is exact for every size/alignment around the threshold', () => {
  const src = pattern(2048, 7), dst = new Uint8Array(2048);
  const sdv = new DataView(src.buffer), ddv = new DataView(dst.buffer);
  for (const n of [0, 1, 3, 4, 5, 63, 64, 65, 255, 256, 257, 1000]) {
    for (let so = 0; so < 4; so++) {
      for (let dof = 0; dof < 4; dof++) {
        dst.fill(0xee);
        copyBytes(src, sdv, 100 + so, dst, ddv, 200 + dof, n);
        assert.deepEqual(dst.subarray(200 + dof, 200 + dof + n), src.subarray(100 + so, 100 + so + n));
        assert.equal(dst[199 + dof], 0xee);
        assert.equal(dst[200 + dof + n], 0xee);
      }
    }
  }
});

test('TX: readFrame skips a header split across descriptors (ANY_LAYOUT)', () => {
  const s = guest();
  const frame = pattern(300);
  const hdr = pattern(12, 99);
  // header cut 5 + 7, the 7 sharing a descriptor with the first frame bytes
  s.g.write(BUF, hdr.subarray(0, 5));
  s.g.write(BUF + 0x100, Uint8Array.from([...hdr.subarray(5), ...frame.subarray(0, 100)]));
  s.g.write(BUF + 0x1003, frame.subarray(100));
  s.drv.addChain([{ addr: BUF, len: 5 }, { addr: BUF + 0x100, len: 107 }, { addr: BUF + 0x1003, len: 200 }]);
  assert.ok(s.q.popChain(s.chain) >= 0);
  const dst = new Uint8Array(2000).fill(0xcc);
  assert.equal(readFrame(s.chain, 12, dst, 10), 300);
  assert.deepEqual(dst.subarray(10, 310), frame);
  assert.equal(dst[9], 0xcc);
  assert.equal(dst[310], 0xcc);
  // Same chain read as legacy 10-byte header: 2 more bytes of "frame".
  assert.equal(readFrame(s.chain, 10, dst, 0), 302);
  assert.deepEqual(dst.subarray(2, 302), frame);
});

test('TX: readFrame rejects short, oversized and non-fitting frames', () => {
  const s = guest();
  const dst = new Uint8Array(100);
  s.drv.addChain([{ addr: BUF, len: 11 }]); // shorter than a 12-byte header
  assert.ok(s.q.popChain(s.chain) >= 0);
  assert.equal(readFrame(s.chain, 12, dst, 0), -1);
  assert.equal(readFrame(s.chain, 10, dst, 0), 1);
  s.drv.addChain([{ addr: BUF, len: 12 + 89 }]);
  assert.ok(s.q.popChain(s.chain) >= 0);
  assert.equal(readFrame(s.chain, 12, dst, 11), 89);
  assert.equal(readFrame(s.chain, 12, dst, 12), -1); // 89 > 88 left in dst
  assert.equal(readFrame(s.chain, 12, dst, -1), -1);
  s.drv.addChain([{ addr: BUF, len: 12 + MAX_FRAME_LEN + 1 }]);
  assert.ok(s.q.popChain(s.chain) >= 0);
  assert.equal(readFrame(s.chain, 12, new Uint8Array(70000), 0), -1);
  assert.ok(s.g.guardsIntact());
});

function rxHeader(s: ReturnType<typeof guest>, gpa: number) {
  const h = s.g.read(gpa, 12);
  return { zero: h.subarray(0, 10).every((b) => b === 0), numBuffers: h[10]! | (h[11]! << 8) };
}

test('RX without MRG_RXBUF: one chain, zeroed header, num_buffers 1', () => {
  const s = guest();
  s.g.write(BUF, new Uint8Array(64).fill(0xff)); // stale bytes must be overwritten
  const h = s.drv.addChain([{ addr: BUF, len: 1526, write: true }]);
  const frame = pattern(1000, 3);
  assert.equal(writeFrame(s.q, s.chain, frame, 0, 1000, 12, false), RX_OK);
  assert.equal(s.drv.usedIdx(), 0, 'not published before flush');
  s.q.flushUsed();
  assert.deepEqual(s.drv.takeUsed(), [{ id: h, len: 1012 }]);
  assert.deepEqual(rxHeader(s, BUF), { zero: true, numBuffers: 1 });
  assert.deepEqual(s.g.read(BUF + 12, 1000), frame);
  // Legacy header: 10 bytes, frame right after.
  const h2 = s.drv.addChain([{ addr: BUF + 0x1000, len: 100, write: true }]);
  s.g.write(BUF + 0x1000, new Uint8Array(20).fill(0xff));
  assert.equal(writeFrame(s.q, s.chain, frame, 5, 60, 10, false), RX_OK);
  s.q.flushUsed();
  assert.deepEqual(s.drv.takeUsed(), [{ id: h2, len: 70 }]);
  assert.ok(s.g.read(BUF + 0x1000, 10).every((b) => b === 0));
  assert.deepEqual(s.g.read(BUF + 0x100a, 60), frame.subarray(5, 65));
  assert.ok(s.g.guardsIntact());
});

test('RX header split across descriptors, num_buffers bytes in different descriptors', () => {
  const s = guest();
  s.g.write(BUF, new Uint8Array(0x3000).fill(0xff));
  const h = s.drv.addChain([
    { addr: BUF, len: 3, write: true }, { addr: BUF + 0x100, len: 8, write: true }, // header bytes 0..10
    { addr: BUF + 0x200, len: 0x400, write: true },
  ]);
  s.drv.addChain([{ addr: BUF + 0x1000, len: 0x400, write: true }]);
  s.drv.addChain([{ addr: BUF + 0x2000, len: 0x400, write: true }]);
  const frame = pattern(0x400 * 2 + 100, 1);
  assert.equal(writeFrame(s.q, s.chain, frame, 0, frame.length, 12, true), RX_OK);
  s.q.flushUsed();
  const used = s.drv.takeUsed();
  assert.equal(used.length, 3);
  assert.deepEqual(used[0], { id: h, len: 3 + 8 + 0x400 });
  assert.ok(s.g.read(BUF, 3).every((b) => b === 0));
  const mid = s.g.read(BUF + 0x100, 8);
  assert.deepEqual(Array.from(mid), [0, 0, 0, 0, 0, 0, 0, 3]); // byte 10 = num_buffers low
  assert.equal(s.g.read(BUF + 0x200, 1)[0], 0); // byte 11 = high
  assert.deepEqual(s.g.read(BUF + 0x201, 0x3ff), frame.subarray(0, 0x3ff));
});

test('RX MRG_RXBUF: frame spans 3 chains, num_buffers = 3, one used entry each', () => {
  const s = guest();
  const heads = [0, 1, 2, 3].map((k) => s.drv.addChain([{ addr: BUF + 0x1000 * k, len: 1024, write: true }]));
  const frame = pattern(2500, 5);
  assert.equal(writeFrame(s.q, s.chain, frame, 0, 2500, 12, true), RX_OK);
  s.q.flushUsed();
  assert.deepEqual(s.drv.takeUsed(), [
    { id: heads[0], len: 1024 }, { id: heads[1], len: 1024 }, { id: heads[2], len: 2512 - 2048 },
  ]);
  assert.deepEqual(rxHeader(s, BUF), { zero: true, numBuffers: 3 });
  const got = new Uint8Array([...s.g.read(BUF + 12, 1012), ...s.g.read(BUF + 0x1000, 1024), ...s.g.read(BUF + 0x2000, 464)]);
  assert.deepEqual(got, frame);
  assert.equal(s.q.availCount(), 1, 'fourth chain untouched');
});

test('RX with no buffers: frame dropped, nothing consumed', () => {
  const s = guest();
  assert.equal(writeFrame(s.q, s.chain, pattern(60), 0, 60, 12, true), RX_NO_BUFFERS);
  assert.equal(writeFrame(s.q, s.chain, pattern(60), 0, 60, 12, false), RX_NO_BUFFERS);
  assert.equal(s.q.flushUsed(), 0);
  assert.equal(s.q.lastAvail, 0);
});

test('RX MRG_RXBUF out of buffers mid-frame rolls back; bad chain in between consumes', () => {
  const s = guest();
  s.drv.addChain([{ addr: BUF, len: 1024, write: true }]);
  s.drv.addChain([{ addr: BUF + 0x1000, len: 1024, write: true }]);
  assert.equal(writeFrame(s.q, s.chain, pattern(3000), 0, 3000, 12, true), RX_NO_BUFFERS);
  assert.equal(s.q.lastAvail, 0);
  assert.equal(s.q.flushUsed(), 0);
  s.drv.addChain([{ addr: BUF + 0x2000, len: 1024, write: true }]);
  assert.equal(writeFrame(s.q, s.chain, pattern(3000), 0, 3000, 12, true), RX_OK);
  assert.equal(s.q.flushUsed(), 3);
  s.drv.takeUsed();
  // Now: good chain, chain smaller than a header (bad), good chain, then dry.
  const g1 = s.drv.addChain([{ addr: BUF, len: 1024, write: true }]);
  const bad = s.drv.addChain([{ addr: BUF + 0x1000, len: 4, write: true }]);
  const g2 = s.drv.addChain([{ addr: BUF + 0x2000, len: 1024, write: true }]);
  assert.equal(writeFrame(s.q, s.chain, pattern(3000), 0, 3000, 12, true), RX_NO_BUFFERS);
  assert.equal(s.q.lastBadReason, BAD_SHORT_RX);
  s.q.flushUsed();
  // Rewinding would replay the bad chain; all three are returned, len 0.
  assert.deepEqual(s.drv.takeUsed(), [{ id: g1, len: 0 }, { id: bad, len: 0 }, { id: g2, len: 0 }]);
  assert.ok(s.g.guardsIntact());
});

test('RX without MRG_RXBUF: chain too small puts it back for the next frame', () => {
  const s = guest();
  const h = s.drv.addChain([{ addr: BUF, len: 200, write: true }]);
  assert.equal(writeFrame(s.q, s.chain, pattern(1500), 0, 1500, 12, false), RX_TOO_BIG);
  assert.equal(s.q.flushUsed(), 0);
  assert.equal(writeFrame(s.q, s.chain, pattern(100), 0, 100, 12, false), RX_OK);
  s.q.flushUsed();
  assert.deepEqual(s.drv.takeUsed(), [{ id: h, len: 112 }]);
  assert.equal(writeFrame(s.q, s.chain, pattern(10), 5, 10, 12, false), -3, 'off+len outside frame');
});

function pair(txHdr: number, rxHdr: number, size = 16) {
  return { a: guest(size, false), b: guest(size, false), txHdr, rxHdr };
}

test('forward: direct copy between two guests with different header sizes', () => {
  for (const [txHdr, rxHdr, mrg] of [[12, 10, false], [10, 12, true], [12, 12, true], [12, 12, false]] as const) {
    const { a, b } = pair(txHdr, rxHdr);
    const frames = [60, 1514, 0, 9000].map((n, i) => pattern(n, i));
    frames.forEach((f, i) => {
      const gpa = BUF + 0x4000 * i;
      a.g.write(gpa, new Uint8Array(txHdr).fill(0x77));
      a.g.write(gpa + txHdr, f);
      // Header and frame in two descriptors; the frame part split again.
      const half = f.length >> 1;
      a.drv.addChain([{ addr: gpa, len: txHdr }, { addr: gpa + txHdr, len: half }, { addr: gpa + txHdr + half, len: f.length - half }]);
    });
    const rxLen = mrg ? 2048 : 9100;
    for (let k = 0; k < 10; k++) b.drv.addChain([{ addr: BUF + 0x2800 * k, len: rxLen, write: true }]);
    const fw = new Forwarder(a.q, b.q, { txHdrLen: txHdr, rxHdrLen: rxHdr, rxMrgRxbuf: mrg });
    assert.equal(fw.forward(64), 4);
    assert.equal(fw.txPublished, 4);
    assert.equal(a.drv.usedIdx(), 4);
    assert.equal(b.drv.usedIdx(), fw.rxPublished);
    assert.deepEqual(a.drv.takeUsed().map((u) => u.len), [0, 0, 0, 0]);
    const used = b.drv.takeUsed();
    let u = 0;
    for (const f of frames) {
      const first = used[u]!;
      const gpa0 = BUF + 0x2800 * first.id;
      const nb = rxHdr === 12 ? rxHeader(b, gpa0).numBuffers : 1;
      assert.ok(b.g.read(gpa0, 10).every((x) => x === 0));
      const parts: Uint8Array[] = [];
      for (let k = 0; k < nb; k++) {
        const e = used[u + k]!;
        const skip = k === 0 ? rxHdr : 0;
        parts.push(b.g.read(BUF + 0x2800 * e.id + skip, e.len - skip));
      }
      u += nb;
      assert.deepEqual(Uint8Array.from(parts.flatMap((p) => [...p])), f, `tx ${txHdr} rx ${rxHdr} mrg ${mrg} len ${f.length}`);
    }
    assert.equal(u, used.length);
    assert.equal(fw.frames, 4);
    assert.ok(a.g.guardsIntact() && b.g.guardsIntact());
  }
});

test('forward: back-pressure or drop when the receiver is full; hostile TX chains', () => {
  const { a, b } = pair(12, 12);
  for (let i = 0; i < 4; i++) a.drv.addChain([{ addr: BUF + 0x800 * i, len: 12 + 64 }]);
  a.drv.addChain([{ addr: BUF, len: 4 }]); // malformed: shorter than the header
  a.drv.setDesc(15, 0x7fff0000, 100, 0, 0); // outside memory: bad chain
  a.drv.publish(15);
  b.drv.addChain([{ addr: BUF, len: 2048, write: true }]);
  const fw = new Forwarder(a.q, b.q, { txHdrLen: 12, rxHdrLen: 12, rxMrgRxbuf: true });
  assert.equal(fw.forward(64), 1);
  assert.equal(fw.rxStalled, true);
  assert.equal(a.q.availCount(), 5, 'second frame left in the TX ring');
  b.drv.addChain([{ addr: BUF + 0x1000, len: 2048, write: true }]);
  assert.equal(fw.forward(64), 1);
  const drop = new Forwarder(a.q, b.q, { txHdrLen: 12, rxHdrLen: 12, rxMrgRxbuf: true, dropWhenRxFull: true });
  assert.equal(drop.forward(64), 0);
  assert.equal(drop.rxFullDrops, 2);
  assert.equal(drop.txMalformed, 1);
  assert.equal(a.q.badChains, 1);
  assert.equal(a.q.availCount(), 0);
  assert.equal(a.drv.takeUsed().length, 6, 'every TX chain returned to the sender');
  assert.ok(a.g.guardsIntact() && b.g.guardsIntact());
});

test('forward: maxFrames bounds the batch and used.idx is published once per batch', () => {
  const { a, b } = pair(12, 12, 256);
  for (let i = 0; i < 200; i++) a.drv.addChain([{ addr: BUF + 0x100 * i, len: 12 + 64 }]);
  for (let i = 0; i < 200; i++) b.drv.addChain([{ addr: BUF + 0x100 * i, len: 256, write: true }]);
  const fw = new Forwarder(a.q, b.q, { txHdrLen: 12, rxHdrLen: 12, rxMrgRxbuf: true });
  assert.equal(fw.forward(32), 32);
  assert.equal(a.drv.usedIdx(), 32);
  assert.equal(b.drv.usedIdx(), 32);
  assert.equal(b.q.needsNotify(), true); // used_event 0 was crossed
  assert.equal(fw.forward(1000), 168);
  assert.equal(b.q.needsNotify(), false, 'guest did not move used_event');
});
