// The uplink's AF_XDP TX ring (dataplane/xsk-tx.ts, and native/uplink.c
// qnh_to_xsk through PacketRingIo.fastSend) over plain memory, the test
// playing the kernel (it consumes TX entries and produces completions):
// frames land in the UMEM frame of their entry with a matching descriptor, a
// frame is reused only after its completion, a completion count that makes
// no sense is ignored, kicks repeat while the kernel says "more" and stop
// when it refuses, and frames leave in order across the AF_XDP socket and
// the packet TX ring.
import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import { ringsBytes, type PacketRings } from '../../../../src/sys/packet.js';
import { ringGeometry, TP_STATUS_SEND_REQUEST, TX_DATA_OFFSET } from '../../../../src/sys/tpacket.js';
import { PacketRingIo } from '../../../../src/vhost-user/dataplane/uplink-io.js';
import { XskTx, type XskTxGeometry } from '../../../../src/vhost-user/dataplane/xsk-tx.js';
import { hasFastPath, stopReason, STOP_MAC, STOP_RX_EMPTY, STOP_TX_EMPTY, STOP_TX_OTHER } from '../../../../src/vhost-user/virtq/native.js';
import { frame, send, side, SIDE_DST, SIDE_SRC } from '../../../lib/native-side.js';

const EAGAIN = 11;
const EBUSY = 16;
const FRAMES = 8;
const FRAME_SIZE = 2048;
const g: XskTxGeometry = {
  frames: FRAMES, frameSize: FRAME_SIZE,
  tx: { producer: 0, consumer: 64, desc: 128 }, cq: { producer: 0, consumer: 64, desc: 128 },
};

/** The kernel's side: reads our descriptors, consumes TX entries, completes frames. */
class FakeKernel {
  readonly umem = new ArrayBuffer(FRAMES * FRAME_SIZE);
  readonly tx = new ArrayBuffer(128 + FRAMES * 16);
  readonly cq = new ArrayBuffer(128 + FRAMES * 8);
  private readonly txv = new DataView(this.tx);
  private readonly cqv = new DataView(this.cq);
  readonly sent: Uint8Array[] = [];
  kicks = 0;
  /** Entries one kick takes (as copy mode's batch), and what it answers then. */
  batch = 32;
  refuse = 0;

  get prod(): number { return this.txv.getUint32(0, true); }
  get cons(): number { return this.txv.getUint32(64, true); }
  get completed(): number { return this.cqv.getUint32(0, true); }
  set completed(v: number) { this.cqv.setUint32(0, v >>> 0, true); }

  /** A kick: take up to `batch` entries (copying their frames out), complete them. */
  readonly kick = (): number => {
    this.kicks++;
    if (this.refuse) return this.refuse;
    let n = 0;
    while (this.cons !== this.prod && n < this.batch) {
      const at = 128 + (this.cons % FRAMES) * 16;
      const addr = Number(this.txv.getBigUint64(at, true));
      const len = this.txv.getUint32(at + 8, true);
      assert.equal(this.txv.getUint32(at + 12, true), 0, 'options 0');
      assert.ok(addr % FRAME_SIZE === 0 && addr + len <= FRAMES * FRAME_SIZE, 'descriptor inside its UMEM frame');
      this.sent.push(new Uint8Array(this.umem, addr, len).slice());
      this.txv.setUint32(64, this.cons + 1, true);
      n++;
    }
    this.completed = this.completed + n;
    return this.cons === this.prod ? 0 : EAGAIN;
  };

  xsk(maxLen = 1518): XskTx { return new XskTx(g, this.umem, this.tx, this.cq, this.kick, maxLen); }
}

describe('uplink: AF_XDP TX ring over plain memory (the test is the kernel)', () => {
  it('a frame per entry, in its own UMEM frame; one flush sends all of them, kicking while the kernel says more', () => {
    const k = new FakeKernel();
    k.batch = 3;
    const x = k.xsk();
    const frames = [14, 60, 1514, 64, 100, 1518, 70].map((l, i) => frame(l, SIDE_DST, SIDE_SRC, i));
    for (const f of frames) assert.equal(x.put(f, 0, f.length), true);
    assert.equal(x.unsent(), frames.length);
    x.flush();
    assert.equal(k.kicks, 3, '3 + 3 + 1');
    assert.deepEqual(k.sent, frames);
    assert.equal(x.inFlight(), 0);
  });

  it('refuses what it cannot send: too short, too long, out of the buffer', () => {
    const x = new FakeKernel().xsk(1000);
    const f = frame(1514);
    assert.equal(x.maxLen, 1000);
    assert.equal(x.put(f, 0, 13), false);
    assert.equal(x.put(f, 0, 1001), false);
    assert.equal(x.put(f, 1000, 600), false);
    assert.equal(x.put(f, -1, 60), false);
    assert.equal(x.unsent(), 0);
  });

  it('a frame is reused only after its completion: full drops the frame, a completion frees exactly one', () => {
    const k = new FakeKernel();
    const x = k.xsk();
    for (let i = 0; i < FRAMES; i++) assert.equal(x.put(frame(60, SIDE_DST, SIDE_SRC, i), 0, 60), true);
    assert.equal(x.put(frame(60), 0, 60), false, 'every frame in flight');
    // The kernel took them all but completed only one.
    k.refuse = 0;
    k.batch = FRAMES;
    const before = k.completed;
    k.kick();
    k.completed = before + 1;
    assert.equal(x.put(frame(60, SIDE_DST, SIDE_SRC, 99), 0, 60), true);
    assert.equal(x.put(frame(60), 0, 60), false);
    // The new frame went into frame 0, the one completed.
    assert.deepEqual(new Uint8Array(k.umem, 0, 60), frame(60, SIDE_DST, SIDE_SRC, 99));
  });

  it('a completion count beyond what was sent is ignored (nothing reused early)', () => {
    const k = new FakeKernel();
    const x = k.xsk();
    for (let i = 0; i < FRAMES; i++) x.put(frame(60), 0, 60);
    for (const bogus of [FRAMES + 1, 0xffffffff, 0x80000000]) {
      k.completed = bogus;
      assert.equal(x.put(frame(60), 0, 60), false, `count ${bogus}`);
      assert.equal(x.inFlight(), FRAMES);
    }
  });

  it('a kernel that refuses (EBUSY) is kicked once; the frames stay queued for the next flush; a stuck EAGAIN is bounded', () => {
    const k = new FakeKernel();
    const x = k.xsk();
    x.put(frame(60), 0, 60);
    k.refuse = EBUSY;
    x.flush();
    assert.equal(k.kicks, 1);
    assert.equal(x.unsent(), 1);
    k.refuse = EAGAIN;
    x.flush();
    assert.ok(k.kicks <= 4, `${k.kicks} kicks`);
    k.refuse = 0;
    x.flush();
    assert.equal(x.unsent(), 0);
    assert.equal(k.sent.length, 1);
  });

  it('PacketRingIo: plain frames through AF_XDP, frames with a vnet header through the TX ring, in the order queued', () => {
    const rings: PacketRings = { rx: ringGeometry(1518, 0, 16, 10), tx: ringGeometry(1518, 0, 16, 10) };
    const txBase = rings.rx.blockSize * rings.rx.blockCount;
    const mem = new ArrayBuffer(ringsBytes(rings));
    const dv = new DataView(mem);
    const k = new FakeKernel();
    const order: string[] = [];
    // Kicking the packet ring "sends" its marked slots, noting them in the order seen.
    let ringNext = 0;
    const kickRing = (): boolean => {
      for (;;) {
        const slot = txBase + ringNext * rings.tx.frameSize;
        if (dv.getUint32(slot, true) !== TP_STATUS_SEND_REQUEST) return true;
        order.push(`ring:${new Uint8Array(mem, slot + TX_DATA_OFFSET + 10 + 14, 1)[0]}`);
        dv.setUint32(slot, 0, true);
        ringNext = (ringNext + 1) % rings.tx.frameCount;
      }
    };
    const io = new PacketRingIo(-1, rings, mem, kickRing, () => {}, true);
    const kickXsk = (): number => { const before = k.sent.length; const r = k.kick(); for (const f of k.sent.slice(before)) order.push(`xsk:${f[14]}`); return r; };
    io.sendThrough(new XskTx(g, k.umem, k.tx, k.cq, kickXsk, io.maxRingFrame));
    const tagged = (n: number): Uint8Array => { const f = frame(64); f[14] = n; return f; };
    const hdr = Uint8Array.from([1, 0, 0, 0, 0, 0, 34, 0, 16, 0]); // NEEDS_CSUM
    assert.equal(io.sendFlat(tagged(1), 0, 64), true);
    assert.equal(io.sendFlat(tagged(2), 0, 64), true);
    assert.equal(io.sendFlat(tagged(3), 0, 64, hdr), true);
    assert.equal(io.sendFlat(tagged(4), 0, 64), true);
    assert.equal(io.sendFlat(tagged(5), 0, 64, hdr), true);
    io.flush();
    assert.deepEqual(order, ['xsk:1', 'xsk:2', 'ring:3', 'xsk:4', 'ring:5']);
  });

  describe('native fast path (qnh_to_xsk)', { skip: hasFastPath ? false : 'no native library' }, () => {
    const ringIo = (k: FakeKernel): PacketRingIo => {
      const rings: PacketRings = { rx: ringGeometry(1518, 0, 16), tx: ringGeometry(1518, 0, 16) };
      const io = new PacketRingIo(-1, rings, new ArrayBuffer(ringsBytes(rings)), () => true, () => {});
      io.sendThrough(k.xsk());
      return io;
    };

    it('guest TX -> UMEM frames and descriptors byte for byte, in order; stops on an empty guest ring', () => {
      const a = side();
      const k = new FakeKernel();
      const io = ringIo(k);
      const lens = [14, 60, 1514, 1518];
      const heads = lens.map((l, i) => send(a, i, frame(l, SIDE_DST, SIDE_SRC, i)));
      assert.equal(io.fastSend(a.q, 64, 12, SIDE_DST, SIDE_SRC), lens.length);
      assert.equal(stopReason, STOP_TX_EMPTY);
      assert.equal(a.q.flushUsed(), lens.length);
      assert.deepEqual(a.drv.takeUsed(), heads.map((id) => ({ id, len: 0 })));
      io.flush();
      assert.deepEqual(k.sent, lens.map((l, i) => frame(l, SIDE_DST, SIDE_SRC, i)));
      assert.ok(a.g.guardsIntact());
    });

    const leaves: [string, number, (a: ReturnType<typeof side>, k: FakeKernel) => void][] = [
      ['another destination MAC', STOP_MAC, (a) => send(a, 2, frame(64, 0x525400000099))],
      ['a frame bigger than the device takes', STOP_TX_OTHER, (a) => send(a, 2, frame(1519))],
      ['a frame shorter than an Ethernet header', STOP_TX_OTHER, (a) => send(a, 2, frame(13))],
      ['a partial checksum (the TX ring carries its header)', STOP_TX_OTHER, (a) => { send(a, 2, frame(64)); a.g.write(0x100000 + 0x2000, Uint8Array.from([1, 0])); }],
    ];
    for (const [what, stop, third] of leaves) {
      it(`stops in front of ${what} without consuming it`, () => {
        const a = side();
        const k = new FakeKernel();
        const io = ringIo(k);
        for (let i = 0; i < 2; i++) send(a, i, frame(64));
        third(a, k);
        assert.equal(io.fastSend(a.q, 64, 12, SIDE_DST, SIDE_SRC), 2);
        assert.equal(stopReason, stop);
        assert.equal(a.q.lastAvail, 2, 'the third chain is still the next one');
        assert.equal(k.prod, 2, 'no entry produced for it');
      });
    }

    it('every UMEM frame in flight: stops (ring full) until the kernel completes one; a bogus completion count frees nothing', () => {
      const a = side();
      const k = new FakeKernel();
      const io = ringIo(k);
      for (let i = 0; i < FRAMES + 2; i++) send(a, i, frame(64, SIDE_DST, SIDE_SRC, i));
      assert.equal(io.fastSend(a.q, 64, 12, SIDE_DST, SIDE_SRC), FRAMES);
      assert.equal(stopReason, STOP_RX_EMPTY);
      k.completed = 0xfffffff0;
      assert.equal(io.fastSend(a.q, 64, 12, SIDE_DST, SIDE_SRC), 0);
      assert.equal(stopReason, STOP_RX_EMPTY);
      k.completed = 1;
      assert.equal(io.fastSend(a.q, 64, 12, SIDE_DST, SIDE_SRC), 1);
      assert.deepEqual(new Uint8Array(k.umem, 0, 64), frame(64, SIDE_DST, SIDE_SRC, FRAMES));
    });
  });
});
