// The native fast path (native/*.c through virtq/native.ts): what it
// moves is byte for byte what the TypeScript path would deliver, it stops in
// front of everything else without consuming it, and hostile rings make it
// stop, never read or write outside the guest's regions.
import assert from 'node:assert/strict';
import { describe, test } from 'node:test';
import { GuestTxPipe } from '../../../../src/vhost-user/dataplane/pipes.js';
import { WorkerPort } from '../../../../src/vhost-user/dataplane/port.js';
import { SwitchCore } from '../../../../src/vhost-user/dataplane/switch-core.js';
import type { QueueSpec } from '../../../../src/vhost-user/dataplane/api.js';
import { VEB } from '../../../../src/vhost-user/switch/forwarding.js';
import { ChainScratch } from '../../../../src/vhost-user/virtq/index.js';
import {
  fastForward, fastPathStatus, hasFastPath, nativeCalls, stopReason,
  STOP_MAC, STOP_MAX, STOP_RX_EMPTY, STOP_RX_OTHER, STOP_TX_EMPTY, STOP_TX_OTHER,
} from '../../../../src/vhost-user/virtq/native.js';
import { MockGuest, MockVirtq, writeDesc } from '../../../lib/mock-driver.js';
import { frame, send, side, SIDE_BUF, SIDE_DST, SIDE_QSIZE, SIDE_SRC, type Side } from '../../../lib/native-side.js';

const QSIZE = SIDE_QSIZE;
const BUF = SIDE_BUF;
const DST = SIDE_DST;
const SRC = SIDE_SRC;
const disabled = process.env.QNH_NATIVE === '0';

function post(b: Side, slot: number, len = 2048): number {
  return b.drv.addChain([{ addr: BUF + 0x20000 + 0x1000 * slot, len, write: true }]);
}

function received(b: Side, slot: number, len: number): Uint8Array {
  return b.g.read(BUF + 0x20000 + 0x1000 * slot, len);
}

test('the native library is built and loaded (QNH_NATIVE=0 turns it off)', () => {
  if (disabled) assert.equal(hasFastPath, false);
  else assert.ok(hasFastPath, `fast path: ${fastPathStatus}`);
});

describe('native fast path', { skip: disabled ? 'QNH_NATIVE=0' : false }, () => {
  for (const [txHdr, rxHdr] of [[12, 12], [10, 12], [12, 10]] as const) {
    test(`moves a run of one-descriptor frames (headers ${txHdr} -> ${rxHdr}) exactly as the spec lays them out`, () => {
      const a = side(), b = side();
      const lens = [14, 60, 64, 65, 1514, 1518];
      const heads = lens.map((l, i) => send(a, i, frame(l, DST, SRC, i), txHdr));
      const rxHeads = lens.map((_, i) => post(b, i));
      assert.equal(fastForward(a.q, b.q, 64, txHdr, rxHdr, DST, SRC), lens.length);
      assert.equal(stopReason, STOP_TX_EMPTY);
      assert.equal(a.q.flushUsed(), lens.length);
      assert.equal(b.q.flushUsed(), lens.length);
      assert.deepEqual(a.drv.takeUsed(), heads.map((id) => ({ id, len: 0 })));
      assert.deepEqual(b.drv.takeUsed(), rxHeads.map((id, i) => ({ id, len: rxHdr + lens[i]! })));
      lens.forEach((l, i) => {
        const got = received(b, i, rxHdr + l);
        const hdr = new Uint8Array(rxHdr);
        if (rxHdr === 12) hdr[10] = 1; // num_buffers
        assert.deepEqual(got.subarray(0, rxHdr), hdr);
        assert.deepEqual(got.subarray(rxHdr), frame(l, DST, SRC, i));
      });
      assert.ok(a.g.guardsIntact() && b.g.guardsIntact());
    });
  }

  test('stops at max, leaving the rest for the next call', () => {
    const a = side(), b = side();
    for (let i = 0; i < 5; i++) { send(a, i, frame(64)); post(b, i); }
    assert.equal(fastForward(a.q, b.q, 3, 12, 12, DST, SRC), 3);
    assert.equal(stopReason, STOP_MAX);
    assert.equal(fastForward(a.q, b.q, 3, 12, 12, DST, SRC), 2);
    assert.equal(a.q.lastAvail, 5);
    assert.equal(b.q.lastUsed, 5);
  });

  // Each case: the third frame (or its receive buffer) is one the fast path
  // must leave alone; it stops after two, and that chain is still the next
  // one the TypeScript path pops.
  const leaves: [string, number, (a: Side, b: Side) => void][] = [
    // (The MACs are checked on the copy in the receiver's buffer, so these post one.)
    ['another destination MAC', STOP_MAC, (a, b) => { send(a, 2, frame(64, 0x525400000099)); post(b, 2); }],
    ['another source MAC', STOP_MAC, (a, b) => { send(a, 2, frame(64, DST, 0x525400000099)); post(b, 2); }],
    ['a chained TX buffer', STOP_TX_OTHER, (a) => {
      const f = frame(64);
      a.g.write(BUF + 0x2000, new Uint8Array(12));
      a.g.write(BUF + 0x3000, f);
      a.drv.addChain([{ addr: BUF + 0x2000, len: 12 }, { addr: BUF + 0x3000, len: 64 }]);
    }],
    ['an indirect TX buffer', STOP_TX_OTHER, (a) => {
      a.g.write(BUF + 0x2000 + 12, frame(64));
      a.drv.addIndirect(0x8000, [{ addr: BUF + 0x2000, len: 76 }]);
    }],
    ['a frame shorter than an Ethernet header', STOP_TX_OTHER, (a) => send(a, 2, frame(13))],
    ['a device-writable TX buffer', STOP_TX_OTHER, (a) => a.drv.addChain([{ addr: BUF + 0x2000, len: 76, write: true }])],
    ['a receive buffer too small', STOP_RX_OTHER, (a, b) => { send(a, 2, frame(1000)); b.drv.addChain([{ addr: BUF + 0x22000, len: 500, write: true }]); }],
    ['a chained receive buffer', STOP_RX_OTHER, (a, b) => {
      send(a, 2, frame(64));
      b.drv.addChain([{ addr: BUF + 0x22000, len: 12, write: true }, { addr: BUF + 0x23000, len: 2048, write: true }]);
    }],
    ['a read-only receive buffer', STOP_RX_OTHER, (a, b) => { send(a, 2, frame(64)); b.drv.addChain([{ addr: BUF + 0x22000, len: 2048 }]); }],
    ['no receive buffer', STOP_RX_EMPTY, (a) => send(a, 2, frame(64))],
  ];
  for (const [what, stop, third] of leaves) {
    test(`stops in front of ${what} without consuming it`, () => {
      const a = side(), b = side();
      for (let i = 0; i < 2; i++) { send(a, i, frame(64)); post(b, i); }
      third(a, b);
      const txAvail = a.drv.availIdx;
      const rxAvail = b.drv.availIdx;
      assert.equal(fastForward(a.q, b.q, 64, 12, 12, DST, SRC), 2);
      assert.equal(stopReason, stop);
      assert.equal(a.q.availCount(), txAvail - 2);
      assert.equal(b.q.availCount(), rxAvail - 2);
      // The TypeScript path takes it from here.
      assert.ok(a.q.popChain(new ChainScratch()) >= 0);
      assert.ok(a.g.guardsIntact() && b.g.guardsIntact());
    });
  }

  test('hostile rings make it stop before it reads or writes any buffer', () => {
    const cases: [string, (a: Side, b: Side) => void][] = [
      ['TX buffer outside memory', (a) => a.drv.addChain([{ addr: 0x5000000, len: 76 }])],
      ['TX buffer past the end of its region', (a) => a.drv.addChain([{ addr: BUF + 0x40000 - 40, len: 76 }])],
      ['TX buffer at 2^64 - 64', (a) => { const h = a.drv.addChain([{ addr: BUF, len: 76 }], false); writeDesc(a.g, a.drv.descGpa + 16 * h, 0xffffffffffffffc0n, 76, 0, 0); a.drv.publish(h); }],
      ['TX length 2^32 - 1', (a) => a.drv.addChain([{ addr: BUF, len: 0xffffffff }])],
      ['RX buffer outside memory', (a, b) => { send(a, 0, frame(64)); b.drv.addChain([{ addr: 0x5000000, len: 2048, write: true }]); }],
      ['RX buffer whose tail lies outside memory (a bad chain for the TypeScript walk)', (a, b) => { send(a, 0, frame(64)); b.drv.addChain([{ addr: BUF + 0x40000 - 100, len: 2048, write: true }]); }],
      ['RX buffer straddling two regions', (a, b) => { send(a, 0, frame(64)); b.drv.addChain([{ addr: BUF - 32, len: 2048, write: true }]); }],
      ['TX avail entry beyond the ring', (a) => { a.drv.setAvailEntry(0, QSIZE + 3); a.drv.setAvailIdx(1); }],
      ['RX avail entry beyond the ring', (a, b) => { send(a, 0, frame(64)); b.drv.setAvailEntry(0, 0xffff); b.drv.setAvailIdx(1); }],
      ['TX avail.idx jumping past the ring size', (a) => { send(a, 0, frame(64)); a.drv.setAvailIdx(QSIZE + 5); }],
      ['RX avail.idx jumping past the ring size', (a, b) => { send(a, 0, frame(64)); b.drv.setAvailIdx(40000); }],
    ];
    for (const [what, setup] of cases) {
      const a = side(), b = side();
      // TX cases get a good receive buffer; RX cases post their own.
      if (what.startsWith('TX')) post(b, 5);
      setup(a, b);
      assert.equal(fastForward(a.q, b.q, 64, 12, 12, DST, SRC), 0, what);
      assert.equal(a.q.lastAvail, 0, what);
      assert.equal(a.q.lastUsed, 0, what);
      assert.equal(b.q.lastUsed, 0, what);
      assert.ok(a.g.guardsIntact() && b.g.guardsIntact(), what);
    }
  });

  test('random garbage in both rings: it only stops or moves whole frames, inside the regions', () => {
    let seed = 12345;
    const rnd = (): number => { seed = (seed * 1103515245 + 12345) >>> 0; return seed; };
    for (let round = 0; round < 300; round++) {
      const a = side(), b = side();
      for (const s of [a, b]) {
        // Scribble over descriptor tables and avail rings (the first region).
        for (let i = 0; i < 200; i++) {
          const off = 0x1000 + (rnd() % (16 * QSIZE + 6 + 2 * QSIZE));
          s.g.u8[s.g.host(off)] = rnd() & 0xff;
        }
        // Plausible buffers now and then, so some frames do move.
        for (let d = 0; d < QSIZE; d++) {
          if (rnd() % 3 !== 0) continue;
          const gpa = BUF + 0x1000 * (rnd() % 60) + (rnd() % 64);
          writeDesc(s.g, s.drv.descGpa + 16 * d, rnd() % 8 === 0 ? gpa + 0x3f000 : gpa, 12 + (rnd() % 1600), s === b ? 2 : 0, 0);
          if (s === a) s.g.write(gpa + 12, frame(14));
        }
      }
      const n = fastForward(a.q, b.q, 64, 12, 12, DST, SRC);
      assert.ok(n >= 0 && n <= QSIZE);
      assert.equal(a.q.lastUsed, n);
      assert.equal(b.q.lastUsed, n);
      assert.ok(a.g.guardsIntact() && b.g.guardsIntact(), `round ${round}`);
    }
  });

  test('a ring the control plane restarted on new memory gets a new block', () => {
    const a = side(), b = side();
    send(a, 0, frame(64)); post(b, 0);
    assert.equal(fastForward(a.q, b.q, 64, 12, 12, DST, SRC), 1);
    const b2 = side();
    // Same ring addresses, another guest memory: the block must follow.
    assert.equal(b.q.setRings(b2.g.mem, b2.drv.descUA, b2.drv.availUA, b2.drv.usedUA), null);
    b.q.setBase(0);
    send(a, 1, frame(64)); post(b2, 3);
    assert.equal(fastForward(a.q, b.q, 64, 12, 12, DST, SRC), 1);
    b.q.flushUsed();
    assert.deepEqual(received(b2, 3, 76).subarray(12), frame(64));
    assert.deepEqual(received(b, 3, 76), new Uint8Array(76));
  });
});

// The switch with the fast path under it: runs of decided frames go native,
// every other frame the TypeScript way, and the receiver sees them all, in
// order, with every counter right.
interface SwitchGuest { port: WorkerPort; rx: MockVirtq; tx: MockVirtq; g: MockGuest }

function switchGuest(sw: SwitchCore, id: number): SwitchGuest {
  const g = new MockGuest([{ gpa: 0, size: 0x10000, ua: 0x7f0000000000 }, { gpa: BUF, size: 0x80000, ua: 0x7f1000000000 }]);
  const port = new WorkerPort(id, 1);
  port.mem = g.mem;
  const drv = [MockVirtq.at(g, 64, 0x1000), MockVirtq.at(g, 64, 0x6000)];
  for (let q = 0; q < 2; q++) {
    const spec: QueueSpec = { size: 64, desc: drv[q]!.descUA, avail: drv[q]!.availUA, used: drv[q]!.usedUA, lastAvail: 0, eventIdx: true, indirect: true, mrgRxbuf: true, hdrLen: 12, kickFd: -1, callFd: -1, enabled: true, logAll: false, logUsedGpa: -1, sendOffloads: 0, recvOffloads: 0 };
    port.startQueue(q, spec);
  }
  sw.ports.set(id, port);
  sw.topo.set(id, VEB);
  return { port, rx: drv[0]!, tx: drv[1]!, g };
}

test('switch: mixed frames and MACs arrive in order, counted once', () => {
  const sw = new SwitchCore(() => undefined);
  const a = switchGuest(sw, 0), b = switchGuest(sw, 1);
  sw.refreshTopology();
  sw.now = Date.now();
  // B announces itself so A's frames to it are unicast.
  const bSrc = 0x52540000000b;
  const sent: Uint8Array[] = [];
  let seedN = 0;
  const queue = (f: Uint8Array, chained: boolean): void => {
    const slot = sent.length;
    const gpa = BUF + 0x1000 * slot;
    a.g.write(gpa, new Uint8Array(12));
    a.g.write(gpa + 12, f);
    if (chained) a.tx.addChain([{ addr: gpa, len: 12 }, { addr: gpa + 12, len: f.length }]);
    else a.tx.addChain([{ addr: gpa, len: 12 + f.length }]);
    sent.push(f);
  };
  const bgpa = BUF + 0x40000;
  b.g.write(bgpa, new Uint8Array(12));
  b.g.write(bgpa + 12, frame(60, 0xffffffffffff, bSrc));
  b.tx.addChain([{ addr: bgpa, len: 72 }]);
  new GuestTxPipe(sw, b.port, b.port.queues[1]!).run(); // floods to A: posts no RX, so it is dropped
  for (let i = 0; i < 40; i++) {
    const src = i < 20 ? SRC : SRC + 1; // the source changes mid-stream
    queue(frame(60 + i, bSrc, src, seedN++), i % 7 === 3);
  }
  for (let i = 0; i < 40; i++) b.rx.addChain([{ addr: BUF + 0x50000 + 0x800 * i, len: 2048, write: true }]);
  const pipe = new GuestTxPipe(sw, a.port, a.port.queues[1]!);
  let moved = 0;
  for (let k = 0; k < 5 && moved < 40; k++) moved += pipe.run();
  assert.equal(moved, 40);
  const used = b.rx.takeUsed();
  assert.equal(used.length, 40);
  used.forEach((u, i) => {
    assert.equal(u.len, 12 + sent[i]!.length);
    assert.deepEqual(b.g.read(BUF + 0x50000 + 0x800 * i + 12, sent[i]!.length), sent[i]);
  });
  assert.equal(a.tx.takeUsed().length, 40);
  assert.equal(a.port.stats.txFrames, 40);
  assert.equal(b.port.stats.rxFrames, 40);
  assert.equal(a.port.stats.txDropped, 0);
  if (!disabled) assert.ok(a.port.stats.txNative > 20, `${a.port.stats.txNative} of 40 went native`);
});

// Two streams interleaved frame by frame never hit the decision cache; the
// switch must not try the fast path for each of them (a call that moves
// nothing would cost more than it saves).
test('switch: interleaved streams stay on the TypeScript path, delivered in order', () => {
  const sw = new SwitchCore(() => undefined);
  const a = switchGuest(sw, 0), b = switchGuest(sw, 1), c = switchGuest(sw, 2);
  sw.refreshTopology();
  sw.now = Date.now();
  sw.fdb.learn(0x52540000000b, 1, sw.now);
  sw.fdb.learn(0x52540000000c, 2, sw.now);
  for (let i = 0; i < 40; i++) {
    const gpa = BUF + 0x1000 * i;
    a.g.write(gpa, new Uint8Array(12));
    a.g.write(gpa + 12, frame(60, 0x52540000000b + (i & 1), SRC, i));
    a.tx.addChain([{ addr: gpa, len: 72 }]);
  }
  for (const p of [b, c]) for (let i = 0; i < 20; i++) p.rx.addChain([{ addr: BUF + 0x50000 + 0x800 * i, len: 2048, write: true }]);
  const pipe = new GuestTxPipe(sw, a.port, a.port.queues[1]!);
  const calls = nativeCalls;
  let moved = 0;
  for (let k = 0; k < 5 && moved < 40; k++) moved += pipe.run();
  assert.equal(moved, 40);
  assert.equal(nativeCalls - calls, 0, 'no fast-path call for frames that never repeat a decision');
  for (const [p, first] of [[b, 0], [c, 1]] as const) {
    const used = p.rx.takeUsed();
    assert.equal(used.length, 20);
    used.forEach((_, k) => assert.deepEqual(p.g.read(BUF + 0x50000 + 0x800 * k + 12, 60), frame(60, 0x52540000000b + first, SRC, 2 * k + first)));
  }
  assert.equal(a.port.stats.txFrames, 40);
  assert.equal(a.port.stats.txNative, 0);
});
