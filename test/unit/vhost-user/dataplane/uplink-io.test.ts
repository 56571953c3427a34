// The uplink's TPACKET_V2 ring codec (sys/tpacket.ts) on byte fixtures, and
// the ring protocol (dataplane/uplink-io.ts PacketRingIo) over plain memory
// with the test playing the kernel: frames read and slots handed back in
// order, a full TX ring dropping instead of overwriting, and hostile or
// garbage slot headers never read outside their slot.
import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import { ringsBytes, type PacketRings } from '../../../../src/sys/packet.js';
import {
  encodeTpacketReq, PACKET_VNET_LEN, reinsertVlan, RX_BAD, RX_COPY, RX_EMPTY, RX_FRAME, RX_MAC_OFFSET, TP_STATUS_COPY, ringGeometry, rxSlot, TP_STATUS_SEND_REQUEST, TP_STATUS_USER,
  TP_STATUS_VLAN_TPID_VALID, TP_STATUS_VLAN_VALID, TX_DATA_OFFSET, txCapacity, type RxFrame,
} from '../../../../src/sys/tpacket.js';
import { PacketRingIo } from '../../../../src/vhost-user/dataplane/uplink-io.js';

const frame = (len: number, seed: number): Uint8Array => Uint8Array.from({ length: len }, (_, i) => (i * 7 + seed) & 0xff);

/** Writes a tpacket2_hdr as the kernel would, at byte `slot` of `dv`. */
function kernelRx(dv: DataView, slot: number, o: { status: number; len: number; snap?: number; mac?: number; tci?: number; tpid?: number }): void {
  dv.setUint32(slot + 4, o.len, true);
  dv.setUint32(slot + 8, o.snap ?? o.len, true);
  dv.setUint16(slot + 12, o.mac ?? RX_MAC_OFFSET, true);
  dv.setUint16(slot + 24, o.tci ?? 0, true);
  dv.setUint16(slot + 26, o.tpid ?? 0, true);
  dv.setUint32(slot, o.status, true);
}

const blank = (): RxFrame => ({ off: -1, len: -1, vlanTci: -1, vlanTpid: 0, hdr: -1 });

describe('uplink: TPACKET_V2 codec', () => {
  it('ring geometry: power-of-two slots holding MTU-sized frames, whole slots per block', () => {
    const g = ringGeometry(1518, 8 << 20, 256);
    assert.deepEqual(g, { blockSize: 65536, blockCount: 128, frameSize: 2048, frameCount: 4096 });
    const j = ringGeometry(9018, 8 << 20, 256);
    assert.equal(j.frameSize, 16384);
    assert.equal(j.frameCount, 512);
    assert.ok(txCapacity(j.frameSize) >= 9018 + 4);
    // A small budget still gets the minimum number of slots.
    assert.equal(ringGeometry(1518, 0, 256).frameCount, 256);
    for (const bad of [0, 13, 65536, 1.5, NaN]) assert.throws(() => ringGeometry(bad, 1 << 20), RangeError);
    assert.deepEqual([...encodeTpacketReq(g)], [0, 0, 1, 0, 128, 0, 0, 0, 0, 8, 0, 0, 0, 16, 0, 0]);
  });

  it('an RX slot: empty while the kernel owns it; its frame where tp_mac says; the VLAN tag the kernel took off', () => {
    const buf = new ArrayBuffer(4096);
    const dv = new DataView(buf);
    const f = blank();
    assert.equal(rxSlot(dv, 2048, 2048, 0, f), RX_EMPTY);
    kernelRx(dv, 2048, { status: TP_STATUS_USER, len: 60 });
    assert.equal(rxSlot(dv, 2048, 2048, dv.getUint32(2048, true), f), RX_FRAME);
    assert.deepEqual(f, { off: 2048 + RX_MAC_OFFSET, len: 60, vlanTci: -1, vlanTpid: 0, hdr: -1 });
    kernelRx(dv, 0, { status: TP_STATUS_USER | TP_STATUS_VLAN_VALID, len: 60, tci: 0x2064 });
    assert.equal(rxSlot(dv, 0, 2048, dv.getUint32(0, true), f), RX_FRAME);
    assert.equal(f.vlanTci, 0x2064);
    assert.equal(f.vlanTpid, 0x8100, 'no TPID given: 802.1Q');
    kernelRx(dv, 0, { status: TP_STATUS_USER | TP_STATUS_VLAN_VALID | TP_STATUS_VLAN_TPID_VALID, len: 60, tci: 5, tpid: 0x88a8 });
    assert.equal(rxSlot(dv, 0, 2048, dv.getUint32(0, true), f), RX_FRAME);
    assert.equal(f.vlanTpid, 0x88a8);
    // The frame with its tag put back after the MACs.
    const ring = new Uint8Array(buf);
    const fr = frame(60, 3);
    ring.set(fr, f.off);
    const out = new Uint8Array(100);
    assert.equal(reinsertVlan(ring, f, out), 64);
    assert.deepEqual([...out.subarray(0, 12)], [...fr.subarray(0, 12)]);
    assert.deepEqual([...out.subarray(12, 16)], [0x88, 0xa8, 0, 5]);
    assert.deepEqual([...out.subarray(16, 64)], [...fr.subarray(12)]);
    assert.equal(reinsertVlan(ring, f, new Uint8Array(63)), -1, 'no room: refused, nothing written past the end');
  });

  it('with a vnet header: the frame after it, the header offset; a cut frame marked TP_STATUS_COPY is RX_COPY with its VLAN tag, one cut without COPY is bad', () => {
    const buf = new ArrayBuffer(4096);
    const dv = new DataView(buf);
    const f = blank();
    const mac = RX_MAC_OFFSET + PACKET_VNET_LEN;
    kernelRx(dv, 0, { status: TP_STATUS_USER, len: 60, mac });
    assert.equal(rxSlot(dv, 0, 2048, dv.getUint32(0, true), f, PACKET_VNET_LEN), RX_FRAME);
    assert.deepEqual(f, { off: mac, len: 60, vlanTci: -1, vlanTpid: 0, hdr: RX_MAC_OFFSET });
    // tp_mac leaving no room for the header before it.
    kernelRx(dv, 0, { status: TP_STATUS_USER, len: 60, mac: 52 + PACKET_VNET_LEN - 1 });
    assert.equal(rxSlot(dv, 0, 2048, dv.getUint32(0, true), f, PACKET_VNET_LEN), RX_BAD);
    kernelRx(dv, 2048, { status: TP_STATUS_USER | TP_STATUS_COPY | TP_STATUS_VLAN_VALID, len: 60000, snap: 2048 - mac, mac, tci: 9 });
    assert.equal(rxSlot(dv, 2048, 2048, dv.getUint32(2048, true), f, PACKET_VNET_LEN), RX_COPY);
    assert.equal(f.vlanTci, 9);
    kernelRx(dv, 2048, { status: TP_STATUS_USER, len: 60000, snap: 2048 - mac, mac });
    assert.equal(rxSlot(dv, 2048, 2048, dv.getUint32(2048, true), f, PACKET_VNET_LEN), RX_BAD);
  });

  it('hostile RX slot headers are refused, never read outside the slot', () => {
    const dv = new DataView(new ArrayBuffer(4096));
    const f = blank();
    const cases: [string, Parameters<typeof kernelRx>[2]][] = [
      ['truncated (snaplen < len)', { status: 1, len: 1600, snap: 1500 }],
      ['snaplen > len', { status: 1, len: 60, snap: 100 }],
      ['shorter than an Ethernet header', { status: 1, len: 13 }],
      ['empty', { status: 1, len: 0 }],
      ['tp_mac inside the header', { status: 1, len: 60, mac: 8 }],
      ['tp_mac past the slot', { status: 1, len: 60, mac: 4000 }],
      ['frame running past the slot', { status: 1, len: 2048 - RX_MAC_OFFSET + 1 }],
      ['huge length', { status: 1, len: 0xffffffff }],
    ];
    for (const [what, o] of cases) {
      kernelRx(dv, 2048, o);
      assert.equal(rxSlot(dv, 2048, 2048, dv.getUint32(2048, true), f), RX_BAD, what);
    }
    // Exactly filling the slot is fine.
    kernelRx(dv, 2048, { status: 1, len: 2048 - RX_MAC_OFFSET });
    assert.equal(rxSlot(dv, 2048, 2048, 1, f), RX_FRAME);
    assert.equal(f.off + f.len, 4096);
  });
});

describe('uplink: PacketRingIo over plain memory (the test is the kernel)', () => {
  const rings: PacketRings = { rx: ringGeometry(1518, 0, 64), tx: ringGeometry(1518, 0, 64) };
  const make = (): { io: PacketRingIo; mem: ArrayBuffer; kicks: number[] } => {
    const mem = new ArrayBuffer(ringsBytes(rings));
    const kicks: number[] = [];
    const io = new PacketRingIo(-1, rings, mem, () => { kicks.push(1); return true; }, () => {});
    return { io, mem, kicks };
  };
  const txBase = rings.rx.blockSize * rings.rx.blockCount;

  it('receives frames in ring order, hands each slot back, wraps around, stops at the first kernel-owned slot', () => {
    const { io, mem } = make();
    const dv = new DataView(mem);
    const u8 = new Uint8Array(mem);
    const got: number[][] = [];
    const sink = (b: Uint8Array, off: number, len: number): void => { got.push([...b.subarray(off, off + len)]); };
    const n = rings.rx.frameCount;
    let seq = 0;
    for (let pass = 0; pass < 3; pass++) {
      // The kernel fills 40 slots (wrapping past the end on later passes).
      const sent: number[][] = [];
      for (let i = 0; i < 40; i++, seq++) {
        const slot = (seq % n) * rings.rx.frameSize;
        const fr = frame(60 + (seq % 1400), seq);
        u8.set(fr, slot + RX_MAC_OFFSET);
        kernelRx(dv, slot, { status: TP_STATUS_USER, len: fr.length });
        sent.push([...fr]);
      }
      got.length = 0;
      assert.equal(io.receive(25, sink), 25);
      assert.equal(io.receive(64, sink), 15, 'stops at the slot the kernel still owns');
      assert.deepEqual(got, sent);
      for (let i = seq - 40; i < seq; i++) assert.equal(dv.getUint32((i % n) * rings.rx.frameSize, true), 0, 'slot handed back');
    }
    assert.equal(io.bad, 0);
  });

  it('garbage in every RX slot: no throw, no read outside the ring, every slot counted bad or delivered and handed back', () => {
    const { io, mem } = make();
    const u8 = new Uint8Array(mem);
    const dv = new DataView(mem);
    let x = 12345;
    const rnd = (): number => { x = (x * 1103515245 + 12345) >>> 0; return x; };
    for (let i = 0; i < rings.rx.frameCount * rings.rx.frameSize; i += 4) dv.setUint32(i, rnd(), true);
    for (let s = 0; s < rings.rx.frameCount; s++) dv.setUint32(s * rings.rx.frameSize, rnd() | TP_STATUS_USER, true);
    let delivered = 0;
    const n = io.receive(rings.rx.frameCount, (b, off, len) => {
      assert.ok(off >= 0 && len >= 14 && off + len <= b.length);
      if (b === u8) assert.ok(off + len <= rings.rx.frameCount * rings.rx.frameSize, 'inside the RX ring');
      delivered++;
    });
    assert.equal(n, rings.rx.frameCount);
    assert.equal(delivered + io.bad, n);
    assert.ok(io.bad > n / 2, `mostly refused (${io.bad})`);
    for (let s = 0; s < rings.rx.frameCount; s++) assert.equal(dv.getUint32(s * rings.rx.frameSize, true), 0);
  });

  it('sends into TX slots in order, one kick per batch; a full ring drops instead of overwriting a pending slot', () => {
    const { io, mem, kicks } = make();
    const dv = new DataView(mem);
    const u8 = new Uint8Array(mem);
    const n = rings.tx.frameCount;
    const frames = Array.from({ length: n + 5 }, (_, i) => frame(i === 1 ? txCapacity(rings.tx.frameSize) : 64 + i, i));
    const taken = frames.map((f) => io.sendFlat(f, 0, f.length));
    assert.deepEqual(taken, frames.map((_, i) => i < n), 'the ring holds frameCount frames; the rest dropped');
    assert.equal(kicks.length, 0, 'no syscall per frame');
    io.flush();
    assert.equal(kicks.length, 1);
    for (let i = 0; i < n; i++) {
      const slot = txBase + i * rings.tx.frameSize;
      assert.equal(dv.getUint32(slot, true), TP_STATUS_SEND_REQUEST);
      assert.equal(dv.getUint32(slot + 4, true), frames[i]!.length);
      assert.deepEqual([...u8.subarray(slot + TX_DATA_OFFSET, slot + TX_DATA_OFFSET + frames[i]!.length)], [...frames[i]!]);
    }
    // The kernel sent the first three: their slots take the next frames, in order.
    for (let i = 0; i < 3; i++) dv.setUint32(txBase + i * rings.tx.frameSize, 0, true);
    assert.ok(io.sendFlat(frames[0]!, 0, 60));
    assert.equal(dv.getUint32(txBase + 4, true), 60);
    io.flush();
    io.flush();
    assert.equal(kicks.length, 2, 'no kick without frames queued');
    // Too big for a slot, or arguments outside the buffer: refused.
    const big = new Uint8Array(txCapacity(rings.tx.frameSize) + 1);
    assert.equal(io.sendFlat(big, 0, big.length), false);
    assert.equal(io.sendFlat(frames[0]!, 10, frames[0]!.length), false);
  });
});
