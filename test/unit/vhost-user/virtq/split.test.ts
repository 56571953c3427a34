import { test } from 'node:test';
import assert from 'node:assert/strict';
import {
  BAD_ADDR, BAD_INDIRECT_LEN, BAD_INDIRECT_NESTED, BAD_INDIRECT_NOT_NEGOTIATED,
  BAD_INDIRECT_WITH_NEXT, BAD_INDIRECT_ADDR, BAD_LOOP, BAD_NEXT_RANGE, BAD_ORDER,
  BAD_TOO_MANY_SEGMENTS, BROKEN_AVAIL_IDX, BROKEN_HEAD, ChainScratch,
} from '../../../../src/vhost-user/virtq/chain.js';
import { GuestMemory, GuestMemoryError } from '../../../../src/vhost-user/virtq/memory.js';
import { SplitQueue, isValidQueueSize } from '../../../../src/vhost-user/virtq/split.js';
import {
  MockGuest, MockVirtq, VIRTQ_DESC_F_INDIRECT, VIRTQ_DESC_F_NEXT, VIRTQ_DESC_F_WRITE, writeDesc,
} from '../../../lib/mock-driver.js';

// A: rings + buffers; B: adjacent in guest-physical space (split test);
// C: far away. User addresses deliberately unrelated to guest-physical ones.
const A = 0x0, B = 0x10000, C = 0x200000;
const REGIONS = [
  { gpa: A, size: 0x10000, ua: 0x7f0000000000 },
  { gpa: B, size: 0x10000, ua: 0x7f5500000000 },
  { gpa: C, size: 0x8000, ua: 0x500000000 },
];

function setup(opts: { size?: number; eventIdx?: boolean; indirect?: boolean; cap?: number } = {}) {
  const size = opts.size ?? 8;
  const g = new MockGuest(REGIONS);
  const drv = MockVirtq.at(g, size, A + 0x1000);
  const q = new SplitQueue(size, { eventIdx: opts.eventIdx ?? false, indirectDesc: opts.indirect ?? true });
  assert.equal(q.setRings(g.mem, drv.descUA, drv.availUA, drv.usedUA), null);
  return { g, drv, q, chain: new ChainScratch(opts.cap) };
}

/** Pops everything; asserts the guest saw exactly one bad chain with len 0. */
function expectBad(s: ReturnType<typeof setup>, reason: number, head: number) {
  const before = s.q.badChains;
  assert.equal(s.q.popChain(s.chain), -1);
  assert.equal(s.q.badChains, before + 1);
  assert.equal(s.q.lastBadReason, reason);
  s.q.flushUsed();
  assert.deepEqual(s.drv.takeUsed(), [{ id: head, len: 0 }]);
  assert.equal(s.q.broken, false);
  assert.ok(s.g.guardsIntact());
}

test('GuestMemory translates within one region and caches', () => {
  const g = new MockGuest(REGIONS);
  const m = g.mem;
  assert.equal(m.translateGpa(C + 0x10, 0x100), 0x10);
  assert.equal(m.lastRegion, 2);
  assert.equal(m.translateGpa(B + 0xfff0, 0x10), 0xfff0);
  assert.equal(m.lastRegion, 1);
  assert.equal(m.translateGpa(B + 0xfff0, 0x11), -1); // crosses the end of B
  assert.equal(m.translateGpa(A + 0xfff0, 0x20), -1); // spans A and B: not one region
  assert.equal(m.translateGpa(0x100000, 1), -1);
  assert.equal(m.translateGpa(-1, 1), -1);
  assert.equal(m.translateGpa(NaN, 1), -1);
  assert.equal(m.translateGpa(A, -5), -1);
  assert.equal(m.translateUser(0x7f5500000000 + 8, 8), 8);
  assert.equal(m.lastRegion, 1);
  assert.equal(m.translateUser(B + 8, 8), -1); // a gpa is not a user address
  assert.equal(m.regionOfGpa(B + 3), 1);
  assert.equal(m.regionOfGpa(C + 0x8000), -1);
});

test('GuestMemory rejects bad regions', () => {
  const ok = new Uint8Array(64);
  assert.throws(() => new GuestMemory([]), GuestMemoryError);
  assert.throws(() => new GuestMemory([{ guestPhysAddr: Number.MAX_SAFE_INTEGER - 10, size: 64, userAddr: 0, bytes: ok }]), GuestMemoryError);
  assert.throws(() => new GuestMemory([{ guestPhysAddr: 0, size: 64, userAddr: 2 ** 53 - 32, bytes: ok }]), GuestMemoryError);
  assert.throws(() => new GuestMemory([{ guestPhysAddr: 0, size: 65, userAddr: 0, bytes: ok }]), GuestMemoryError);
  assert.throws(() => new GuestMemory([{ guestPhysAddr: 0.5, size: 64, userAddr: 0, bytes: ok }]), GuestMemoryError);
  const odd = new Uint8Array(new ArrayBuffer(80), 4, 64);
  assert.throws(() => new GuestMemory([{ guestPhysAddr: 0, size: 64, userAddr: 0, bytes: odd }]), GuestMemoryError);
});

test('queue size and ring address validation', () => {
  for (const n of [0, 3, 65536, 32769, 1.5, -8]) assert.equal(isValidQueueSize(n), false);
  for (const n of [1, 2, 256, 32768]) assert.equal(isValidQueueSize(n), true);
  assert.throws(() => new SplitQueue(100, { eventIdx: false, indirectDesc: false }), RangeError);
  const g = new MockGuest(REGIONS);
  const ua = 0x7f0000000000;
  const q = new SplitQueue(256, { eventIdx: true, indirectDesc: true });
  assert.equal(q.setRings(g.mem, ua, ua + 0x1000, ua + 0x2000), null);
  assert.equal(q.ready, true);
  const bad: [number, number, number][] = [
    [0x1234, ua + 0x1000, ua + 0x2000], // outside all regions
    [ua + 0x10000 - 0x800, ua + 0x1000, ua + 0x2000], // table runs off region end
    [ua + 8, ua + 0x1000, ua + 0x2000], // desc not 16-aligned
    [ua, ua + 0x1001, ua + 0x2000], // avail not 2-aligned
    [ua, ua + 0x1000, ua + 0x2002], // used not 4-aligned
    [ua, ua + 0x10000 - 6 - 2 * 256 + 2, ua + 0x2000], // avail (with used_event) overruns
    [ua, ua + 0x1000, ua + 0x10000 - 0x800], // used overruns
    [ua, ua + 0x1000, -4],
    [ua, ua + 0x1000, 2 ** 60],
  ];
  for (const [d, a, u] of bad) {
    assert.equal(typeof q.setRings(g.mem, d, a, u), 'string', `${d} ${a} ${u}`);
    assert.equal(q.ready, false);
    assert.equal(q.popChain(new ChainScratch()), -1);
  }
  // SET_MEM_TABLE re-translation: same addresses, memory without the region.
  assert.equal(q.setRings(g.mem, ua, ua + 0x1000, ua + 0x2000), null);
  const g2 = new MockGuest([REGIONS[2]!]);
  assert.equal(typeof q.setMemory(g2.mem), 'string');
  assert.equal(q.ready, false);
  assert.equal(q.setMemory(g.mem), null);
});

test('simple and multi-descriptor chains, used ring publication', () => {
  const s = setup();
  assert.equal(s.q.popChain(s.chain), -1);
  const h1 = s.drv.addChain([{ addr: C + 0x100, len: 60 }]);
  const h2 = s.drv.addChain([
    { addr: C + 0x200, len: 12 }, { addr: B + 0x40, len: 100 },
    { addr: C + 0x1000, len: 2048, write: true }, { addr: A + 0x8000, len: 512, write: true },
  ]);
  assert.equal(s.q.popChain(s.chain), h1);
  assert.equal(s.chain.count, 1);
  assert.equal(s.chain.readable, 60);
  assert.equal(s.chain.writableBytes, 0);
  assert.equal(s.chain.firstWritable, 1);
  assert.deepEqual([s.chain.region[0], s.chain.offset[0], s.chain.length[0]], [2, 0x100, 60]);
  s.q.pushUsed(h1, 0);
  assert.equal(s.q.popChain(s.chain), h2);
  assert.equal(s.chain.count, 4);
  assert.equal(s.chain.readable, 112);
  assert.equal(s.chain.writableBytes, 2560);
  assert.equal(s.chain.firstWritable, 2);
  assert.deepEqual(Array.from(s.chain.writable.subarray(0, 4)), [0, 0, 1, 1]);
  assert.deepEqual(Array.from(s.chain.region.subarray(0, 4)), [2, 1, 2, 0]);
  s.q.pushUsed(h2, 1234);
  assert.equal(s.q.popChain(s.chain), -1);
  assert.equal(s.drv.usedIdx(), 0, 'nothing visible before flush');
  assert.equal(s.q.flushUsed(), 2);
  assert.equal(s.q.flushUsed(), 0);
  assert.deepEqual(s.drv.takeUsed(), [{ id: h1, len: 0 }, { id: h2, len: 1234 }]);
  assert.equal(s.q.getBase(), 2);
  assert.ok(s.g.guardsIntact());
});

test('indirect tables: head, after direct descriptors, unaligned table', () => {
  const s = setup();
  const h = s.drv.addIndirect(C + 0x4000, [
    { addr: C + 0x100, len: 10 }, { addr: C + 0x200, len: 20 }, { addr: C + 0x300, len: 30, write: true },
  ], VIRTQ_DESC_F_WRITE /* must be ignored on the indirect descriptor */);
  assert.equal(s.q.popChain(s.chain), h);
  assert.equal(s.chain.count, 3);
  assert.equal(s.chain.readable, 30);
  assert.equal(s.chain.writableBytes, 30);
  assert.equal(s.chain.firstWritable, 2);
  // Spec 2.7.5.3.2: direct descriptors followed by one indirect one.
  writeDesc(s.g, C + 0x5003, C + 0x600, 40, 0, 0); // table at an odd address
  s.drv.setDesc(5, C + 0x500, 8, VIRTQ_DESC_F_NEXT, 6);
  s.drv.setDesc(6, C + 0x5003, 16, VIRTQ_DESC_F_INDIRECT, 0);
  s.drv.publish(5);
  assert.equal(s.q.popChain(s.chain), 5);
  assert.equal(s.chain.count, 2);
  assert.equal(s.chain.readable, 48);
  assert.deepEqual([s.chain.offset[1], s.chain.length[1]], [0x600, 40]);
  assert.ok(s.g.guardsIntact());
});

test('descriptor crossing into an adjacent region is split; into a hole is rejected', () => {
  const s = setup();
  const h = s.drv.addChain([{ addr: B - 0x10, len: 0x30, write: true }]);
  assert.equal(s.q.popChain(s.chain), h);
  assert.equal(s.chain.count, 2);
  assert.deepEqual([s.chain.region[0], s.chain.offset[0], s.chain.length[0]], [0, 0xfff0, 0x10]);
  assert.deepEqual([s.chain.region[1], s.chain.offset[1], s.chain.length[1]], [1, 0, 0x20]);
  assert.equal(s.chain.writableBytes, 0x30);
  const h2 = s.drv.addChain([{ addr: B + 0xfff0, len: 0x20 }]); // B ends, nothing follows
  expectBad(s, BAD_ADDR, h2);
});

test('hostile descriptor chains are returned with len 0, never followed', () => {
  const s = setup({ indirect: true });
  const cases: [string, () => number, number][] = [
    ['loop', () => { s.drv.setDesc(0, C, 8, VIRTQ_DESC_F_NEXT, 1); s.drv.setDesc(1, C, 8, VIRTQ_DESC_F_NEXT, 0); return 0; }, BAD_LOOP],
    ['self loop', () => { s.drv.setDesc(2, C, 8, VIRTQ_DESC_F_NEXT, 2); return 2; }, BAD_LOOP],
    ['next >= size', () => { s.drv.setDesc(3, C, 8, VIRTQ_DESC_F_NEXT, 8); return 3; }, BAD_NEXT_RANGE],
    ['next = 0xffff', () => { s.drv.setDesc(3, C, 8, VIRTQ_DESC_F_NEXT, 0xffff); return 3; }, BAD_NEXT_RANGE],
    ['addr outside memory', () => { s.drv.setDesc(4, 0x100000, 8, 0, 0); return 4; }, BAD_ADDR],
    ['addr+len crosses region end', () => { s.drv.setDesc(4, C + 0x7ff0, 0x20, 0, 0); return 4; }, BAD_ADDR],
    ['len 0xffffffff', () => { s.drv.setDesc(4, C, 0xffffffff, VIRTQ_DESC_F_WRITE, 0); return 4; }, BAD_ADDR],
    ['addr >= 2^53', () => { s.drv.setDesc(4, 2 ** 60, 8, 0, 0); return 4; }, BAD_ADDR],
    ['addr 2^64-8', () => { s.drv.setDesc(4, 2n ** 64n - 8n, 16, 0, 0); return 4; }, BAD_ADDR],
    ['readable after writable', () => {
      s.drv.setDesc(5, C, 8, VIRTQ_DESC_F_WRITE | VIRTQ_DESC_F_NEXT, 6); s.drv.setDesc(6, C, 8, 0, 0); return 5;
    }, BAD_ORDER],
    ['indirect inside indirect', () => {
      writeDesc(s.g, C + 0x4000, C + 0x4100, 16, VIRTQ_DESC_F_INDIRECT, 0);
      writeDesc(s.g, C + 0x4100, C, 8, 0, 0);
      s.drv.setDesc(7, C + 0x4000, 16, VIRTQ_DESC_F_INDIRECT, 0); return 7;
    }, BAD_INDIRECT_NESTED],
    ['indirect with NEXT', () => {
      writeDesc(s.g, C + 0x4000, C, 8, 0, 0);
      s.drv.setDesc(7, C + 0x4000, 16, VIRTQ_DESC_F_INDIRECT | VIRTQ_DESC_F_NEXT, 1); return 7;
    }, BAD_INDIRECT_WITH_NEXT],
    ['indirect len not multiple of 16', () => { s.drv.setDesc(7, C + 0x4000, 24, VIRTQ_DESC_F_INDIRECT, 0); return 7; }, BAD_INDIRECT_LEN],
    ['indirect len 0', () => { s.drv.setDesc(7, C + 0x4000, 0, VIRTQ_DESC_F_INDIRECT, 0); return 7; }, BAD_INDIRECT_LEN],
    ['indirect table outside memory', () => { s.drv.setDesc(7, C + 0x7ff0, 32, VIRTQ_DESC_F_INDIRECT, 0); return 7; }, BAD_INDIRECT_ADDR],
    ['indirect len 0xfffffff0', () => { s.drv.setDesc(7, C, 0xfffffff0, VIRTQ_DESC_F_INDIRECT, 0); return 7; }, BAD_INDIRECT_ADDR],
    ['indirect loop', () => {
      writeDesc(s.g, C + 0x4000, C, 8, VIRTQ_DESC_F_NEXT, 1);
      writeDesc(s.g, C + 0x4010, C, 8, VIRTQ_DESC_F_NEXT, 0);
      s.drv.setDesc(7, C + 0x4000, 32, VIRTQ_DESC_F_INDIRECT, 0); return 7;
    }, BAD_LOOP],
    ['indirect next beyond len/16', () => {
      writeDesc(s.g, C + 0x4000, C, 8, VIRTQ_DESC_F_NEXT, 2);
      writeDesc(s.g, C + 0x4010, C, 8, 0, 0);
      writeDesc(s.g, C + 0x4020, C, 8, 0, 0);
      s.drv.setDesc(7, C + 0x4000, 32, VIRTQ_DESC_F_INDIRECT, 0); return 7;
    }, BAD_NEXT_RANGE],
  ];
  for (const [name, make, reason] of cases) {
    const head = make();
    s.drv.publish(head);
    try {
      expectBad(s, reason, head);
    } catch (e) {
      throw new Error(`case "${name}": ${(e as Error).message}`);
    }
  }
  // The queue still works afterwards.
  s.drv.setDesc(0, C + 8, 8, 0, 0);
  s.drv.publish(0);
  assert.equal(s.q.popChain(s.chain), 0);
});

test('indirect descriptors when not negotiated; chain over scratch capacity', () => {
  const s = setup({ indirect: false, cap: 2 });
  writeDesc(s.g, C + 0x4000, C, 8, 0, 0);
  s.drv.setDesc(1, C + 0x4000, 16, VIRTQ_DESC_F_INDIRECT, 0);
  s.drv.publish(1);
  expectBad(s, BAD_INDIRECT_NOT_NEGOTIATED, 1);
  const h = s.drv.addChain([{ addr: C, len: 1 }, { addr: C, len: 1 }, { addr: C, len: 1 }]);
  expectBad(s, BAD_TOO_MANY_SEGMENTS, h);
});

test('avail.idx jumping by more than the queue size breaks the queue', () => {
  const s = setup();
  s.drv.addChain([{ addr: C, len: 8 }]);
  assert.equal(s.q.popChain(s.chain) >= 0, true);
  s.drv.setAvailIdx(1 + 9); // 9 > size 8
  assert.equal(s.q.popChain(s.chain), -2);
  assert.equal(s.q.broken, true);
  assert.equal(s.q.brokenReason, BROKEN_AVAIL_IDX);
  assert.equal(s.q.popChain(s.chain), -2);
  assert.equal(s.q.availCount(), 0);
  s.drv.setAvailIdx(0); // going backwards is a jump of 0xffff
  s.q.setBase(1);
  assert.equal(s.q.popChain(s.chain), -2);
  assert.ok(s.g.guardsIntact());
});

test('head index >= size breaks the queue', () => {
  const s = setup();
  s.drv.setAvailEntry(0, 8);
  s.drv.setAvailIdx(1);
  assert.equal(s.q.popChain(s.chain), -2);
  assert.equal(s.q.brokenReason, BROKEN_HEAD);
  s.q.flushUsed();
  assert.equal(s.drv.usedIdx(), 0);
});

test('EVENT_IDX notification decisions across u16 wrap-around', () => {
  const s = setup({ eventIdx: true });
  s.q.setBase(0xfffc);
  s.drv.availIdx = 0xfffc;
  s.drv.usedSeen = 0xfffc;
  const complete = (n: number) => {
    for (let i = 0; i < n; i++) {
      const h = s.drv.addChain([{ addr: C, len: 8 }]);
      assert.equal(s.q.popChain(s.chain), h);
      s.q.pushUsed(h, 0);
    }
    s.q.flushUsed();
    s.drv.takeUsed();
  };
  // used_event = 0xfffe: notify when used.idx moves past 0xfffe.
  s.drv.setUsedEvent(0xfffe);
  complete(1); // 0xfffc -> 0xfffd: the first decision after a start always signals
  assert.equal(s.q.needsNotify(), true);
  complete(1); // 0xfffd -> 0xfffe: event not crossed
  assert.equal(s.q.needsNotify(), false);
  complete(2); // 0xfffe -> 0x0000 crosses 0xffff (old 0xfffe, new 0)
  assert.equal(s.q.needsNotify(), true);
  s.drv.setUsedEvent(0x0001);
  complete(1); // 0 -> 1: event 1 not yet passed
  assert.equal(s.q.needsNotify(), false);
  complete(1); // 1 -> 2: passed
  assert.equal(s.q.needsNotify(), true);
  assert.equal(s.q.needsNotify(), false, 'nothing new since last decision');
  s.drv.setUsedEvent(0xfff0); // far behind: (new - ev - 1) is large
  complete(3);
  assert.equal(s.q.needsNotify(), false);
  // Spec formula on raw values, including the wrap cases.
  const vr = (ev: number, nw: number, old: number) => ((nw - ev - 1) & 0xffff) < ((nw - old) & 0xffff);
  assert.equal(vr(0xffff, 0, 0xfffe), true);
  assert.equal(vr(0, 0, 0xffff), false);
  assert.equal(vr(0xfffe, 1, 0xffff), false);
});

test('without EVENT_IDX: VRING_AVAIL_F_NO_INTERRUPT and used flags', () => {
  const s = setup();
  const h = s.drv.addChain([{ addr: C, len: 8 }]);
  assert.equal(s.q.popChain(s.chain), h);
  s.q.pushUsed(h, 0);
  s.q.flushUsed();
  s.drv.setAvailFlags(1);
  assert.equal(s.q.needsNotify(), false);
  const h2 = s.drv.addChain([{ addr: C, len: 8 }]);
  assert.equal(s.q.popChain(s.chain), h2);
  s.q.pushUsed(h2, 0);
  s.q.flushUsed();
  s.drv.setAvailFlags(0);
  assert.equal(s.q.needsNotify(), true);
  s.q.disableNotify();
  assert.equal(s.drv.usedFlags(), 1);
  assert.equal(s.q.enableNotify(), false);
  assert.equal(s.drv.usedFlags(), 0);
  s.drv.addChain([{ addr: C, len: 8 }], true);
  assert.equal(s.q.enableNotify(), true, 'pending buffers reported');
});

test('EVENT_IDX enableNotify writes avail_event = lastAvail', () => {
  const s = setup({ eventIdx: true });
  s.q.setBase(0x1234);
  s.drv.availIdx = 0x1234;
  s.drv.setAvailIdx(0x1234);
  assert.equal(s.q.enableNotify(), false);
  assert.equal(s.drv.availEvent(), 0x1234);
  s.q.disableNotify();
  assert.equal(s.drv.usedFlags(), 0, 'used.flags untouched with EVENT_IDX');
});

test('resyncFromUsed, unpop and rewind', () => {
  const s = setup();
  for (let i = 0; i < 3; i++) s.drv.addChain([{ addr: C, len: 8 }]);
  const h0 = s.q.popChain(s.chain);
  s.q.pushUsed(h0, 0);
  s.q.flushUsed();
  const h1 = s.q.popChain(s.chain);
  s.q.unpop();
  assert.equal(s.q.popChain(s.chain), h1);
  const a = s.q.lastAvail, u = s.q.lastUsed, b = s.q.badChains;
  s.q.pushUsed(h1, 5);
  s.q.pushUsed(s.q.popChain(s.chain), 6);
  s.q.rewind(a, u, b);
  assert.equal(s.q.lastAvail, a);
  assert.equal(s.q.lastUsed, u);
  assert.equal(s.q.flushUsed(), 0);
  // Reconnect: a new back-end resumes from the guest's used.idx.
  const q2 = new SplitQueue(8, { eventIdx: false, indirectDesc: true });
  q2.setRings(s.g.mem, s.drv.descUA, s.drv.availUA, s.drv.usedUA);
  q2.resyncFromUsed();
  assert.equal(q2.lastAvail, 1);
  assert.equal(q2.lastUsed, 1);
  assert.equal(q2.popChain(s.chain), h1);
});

test('fuzz: random descriptor tables and indices never throw or escape', () => {
  let seed = 0x12345678;
  const rnd = () => {
    seed ^= seed << 13; seed ^= seed >>> 17; seed ^= seed << 5;
    return (seed >>> 0) / 4294967296;
  };
  const pick = <T>(xs: readonly T[]) => xs[Math.floor(rnd() * xs.length)]!;
  const addrs = [A, A + 0xfff8, B - 4, B + 0xfff0, C, C + 0x7fff, 0x100000, 2 ** 40, 2 ** 63, 0xffffffff];
  const lens = [0, 1, 8, 16, 32, 48, 0x10, 0x8000, 0xfff0, 0xffffffff];
  for (let round = 0; round < 300; round++) {
    const s = setup({ size: 16, eventIdx: rnd() < 0.5, indirect: rnd() < 0.7, cap: 8 });
    for (let i = 0; i < 16; i++) {
      s.drv.setDesc(i, pick(addrs) + Math.floor(rnd() * 64), pick(lens), Math.floor(rnd() * 8), Math.floor(rnd() * 20));
    }
    // Random indirect-looking tables inside C.
    for (let k = 0; k < 64; k++) {
      writeDesc(s.g, C + 16 * k, pick(addrs), pick(lens), Math.floor(rnd() * 8), Math.floor(rnd() * 6));
    }
    for (let i = 0; i < 16; i++) s.drv.setAvailEntry(i, rnd() < 0.9 ? Math.floor(rnd() * 16) : Math.floor(rnd() * 65536));
    s.drv.setAvailIdx(rnd() < 0.9 ? Math.floor(rnd() * 17) : Math.floor(rnd() * 65536));
    for (let i = 0; i < 40; i++) {
      const h = s.q.popChain(s.chain);
      if (h < 0) break;
      for (let k = 0; k < s.chain.count; k++) {
        const r = s.chain.region[k]!;
        assert.ok(s.chain.offset[k]! + s.chain.length[k]! <= s.g.mem.regionSize(r));
      }
      s.q.pushUsed(h, s.chain.writableBytes);
    }
    s.q.flushUsed();
    s.q.needsNotify();
    s.q.enableNotify();
    assert.ok(s.g.guardsIntact());
  }
});
