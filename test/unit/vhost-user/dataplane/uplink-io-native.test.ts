// The uplink's native fast path (native/uplink.c qnh_to_packet and
// qnh_from_packet, through PacketRingIo.fastSend/fastReceive) over plain
// memory, the test playing both the guest (mock driver) and the kernel (slot
// headers): frames move byte for byte in one copy, and the loop stops in
// front of everything else without consuming it: other MACs, a chained
// descriptor, a full TX ring, a VLAN tag to put back, a hostile slot header,
// a guest without a buffer.
import assert from 'node:assert/strict';
import { describe, test } from 'node:test';
import { ringsBytes, type PacketRings } from '../../../../src/sys/packet.js';
import { PACKET_VNET_LEN, RX_MAC_OFFSET, ringGeometry, TP_STATUS_SEND_REQUEST, TP_STATUS_USER, TP_STATUS_VLAN_VALID, TX_DATA_OFFSET, txCapacity } from '../../../../src/sys/tpacket.js';
import { c, closeFd } from '../../../../src/sys/libc.js';
import { dgramPair } from '../../../../src/sys/packet.js';
import { setNonBlocking } from '../../../../src/sys/unix-socket.js';
import { PacketRingIo, TapIo } from '../../../../src/vhost-user/dataplane/uplink-io.js';
import { hasFastPath, stopReason, STOP_MAC, STOP_MAX, STOP_RX_EMPTY, STOP_RX_OTHER, STOP_TX_EMPTY, STOP_TX_OTHER } from '../../../../src/vhost-user/virtq/native.js';
import { frame, send, side, SIDE_BUF, SIDE_DST, SIDE_SRC, type Side } from '../../../lib/native-side.js';

const BUF = SIDE_BUF;
const DST = SIDE_DST;
const SRC = SIDE_SRC;

/** A frame whose virtio-net header asks for an offload: flags (NEEDS_CSUM) or gso_type (TCPV4) set. */
function sendOffload(a: Side, slot: number, f: Uint8Array, flags: number, gsoType: number): number {
  const head = send(a, slot, f);
  a.g.write(BUF + 0x1000 * slot, Uint8Array.from([flags, gsoType]));
  return head;
}

const post = (b: Side, slot: number, len = 2048): number => b.drv.addChain([{ addr: BUF + 0x20000 + 0x1000 * slot, len, write: true }]);

const rings: PacketRings = { rx: ringGeometry(1518, 0, 64), tx: ringGeometry(1518, 0, 64) };
const TX_BASE = rings.rx.blockSize * rings.rx.blockCount;

function ringIo(): { io: PacketRingIo; dv: DataView; u8: Uint8Array } {
  const mem = new ArrayBuffer(ringsBytes(rings));
  return { io: new PacketRingIo(-1, rings, mem, () => true, () => {}), dv: new DataView(mem), u8: new Uint8Array(mem) };
}

/** The kernel's part: frame f in RX slot i. */
function kernelRx(r: { dv: DataView; u8: Uint8Array }, i: number, f: Uint8Array, o: { status?: number; len?: number; mac?: number } = {}): void {
  const slot = i * rings.rx.frameSize;
  r.u8.set(f, slot + RX_MAC_OFFSET);
  r.dv.setUint32(slot + 4, o.len ?? f.length, true);
  r.dv.setUint32(slot + 8, o.len ?? f.length, true);
  r.dv.setUint16(slot + 12, o.mac ?? RX_MAC_OFFSET, true);
  r.dv.setUint32(slot, o.status ?? TP_STATUS_USER, true);
}

describe('uplink native fast path', { skip: hasFastPath ? false : 'no native library' }, () => {
  test('guest TX -> TX ring slots: byte for byte, marked for sending, in order; stops at max and on an empty ring', () => {
    const a = side();
    const r = ringIo();
    const lens = [14, 60, 64, 1514, txCapacity(rings.tx.frameSize)];
    const heads = lens.map((l, i) => send(a, i, frame(l, DST, SRC, i)));
    assert.equal(r.io.fastSend(a.q, 3, 12, DST, SRC), 3);
    assert.equal(stopReason, STOP_MAX);
    assert.equal(r.io.fastSend(a.q, 64, 12, DST, SRC), 2);
    assert.equal(stopReason, STOP_TX_EMPTY);
    assert.equal(a.q.flushUsed(), lens.length);
    assert.deepEqual(a.drv.takeUsed(), heads.map((id) => ({ id, len: 0 })));
    lens.forEach((l, i) => {
      const slot = TX_BASE + i * rings.tx.frameSize;
      assert.equal(r.dv.getUint32(slot, true), TP_STATUS_SEND_REQUEST);
      assert.equal(r.dv.getUint32(slot + 4, true), l);
      assert.deepEqual(r.u8.subarray(slot + TX_DATA_OFFSET, slot + TX_DATA_OFFSET + l), frame(l, DST, SRC, i));
    });
    assert.ok(a.g.guardsIntact());
  });

  const txLeaves: [string, number, (a: Side, r: ReturnType<typeof ringIo>) => void][] = [
    ['another destination MAC', STOP_MAC, (a) => send(a, 2, frame(64, 0x525400000099))],
    ['another source MAC', STOP_MAC, (a) => send(a, 2, frame(64, DST, 0x525400000099))],
    ['a chained TX buffer', STOP_TX_OTHER, (a) => { a.drv.addChain([{ addr: BUF + 0x2000, len: 12 }, { addr: BUF + 0x3000, len: 64 }]); }],
    ['a frame bigger than a slot', STOP_TX_OTHER, (a) => send(a, 2, frame(txCapacity(rings.tx.frameSize) + 1))],
    ['a frame shorter than an Ethernet header', STOP_TX_OTHER, (a) => send(a, 2, frame(13))],
    ['a partial checksum (NEEDS_CSUM: completed in TypeScript)', STOP_TX_OTHER, (a) => sendOffload(a, 2, frame(64), 1, 0)],
    ['a GSO frame (gso_type TCPV4: segmented in TypeScript)', STOP_TX_OTHER, (a) => sendOffload(a, 2, frame(64), 0, 1)],
    ['a TX ring slot the kernel still owns (ring full)', STOP_RX_EMPTY, (a, r) => { send(a, 2, frame(64)); r.dv.setUint32(TX_BASE + 2 * rings.tx.frameSize, 2, true); }],
  ];
  for (const [what, stop, third] of txLeaves) {
    test(`guest TX -> TX ring stops in front of ${what} without consuming it`, () => {
      const a = side();
      const r = ringIo();
      for (let i = 0; i < 2; i++) send(a, i, frame(64));
      third(a, r);
      assert.equal(r.io.fastSend(a.q, 64, 12, DST, SRC), 2);
      assert.equal(stopReason, stop);
      assert.equal(a.q.lastAvail, 2, 'the third chain is still the next one');
      const s2 = TX_BASE + 2 * rings.tx.frameSize;
      assert.notEqual(r.dv.getUint32(s2, true), TP_STATUS_SEND_REQUEST, 'its slot not marked');
    });
  }

  test('RX ring -> guest RX: byte for byte, slots handed back, header written; stops when the ring is empty', () => {
    const b = side();
    const r = ringIo();
    const lens = [14, 60, 64, 1514];
    lens.forEach((l, i) => kernelRx(r, i, frame(l, DST, SRC, i)));
    const rxHeads = lens.map((_, i) => post(b, i));
    assert.equal(r.io.fastReceive(b.q, 64, 12, DST, SRC), lens.length);
    assert.equal(stopReason, STOP_TX_EMPTY);
    assert.equal(b.q.flushUsed(), lens.length);
    assert.deepEqual(b.drv.takeUsed(), rxHeads.map((id, i) => ({ id, len: 12 + lens[i]! })));
    lens.forEach((l, i) => {
      const got = b.g.read(BUF + 0x20000 + 0x1000 * i, 12 + l);
      assert.deepEqual(got.subarray(0, 12), Uint8Array.from([0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 1, 0]));
      assert.deepEqual(got.subarray(12), frame(l, DST, SRC, i));
      assert.equal(r.dv.getUint32(i * rings.rx.frameSize, true), 0, 'slot handed back');
    });
    assert.ok(b.g.guardsIntact());
  });

  const rxLeaves: [string, number, (b: Side, r: ReturnType<typeof ringIo>) => void][] = [
    ['another destination MAC', STOP_MAC, (b, r) => { kernelRx(r, 2, frame(64, 0x525400000099)); post(b, 2); }],
    ['a VLAN tag to put back', STOP_TX_OTHER, (b, r) => { kernelRx(r, 2, frame(64), { status: TP_STATUS_USER | TP_STATUS_VLAN_VALID }); post(b, 2); }],
    ['a truncated frame', STOP_TX_OTHER, (b, r) => { kernelRx(r, 2, frame(64)); r.dv.setUint32(2 * rings.rx.frameSize + 4, 2000, true); post(b, 2); }],
    ['tp_mac past the slot', STOP_TX_OTHER, (b, r) => { kernelRx(r, 2, frame(64), { mac: 0xffff }); post(b, 2); }],
    ['a length past the slot', STOP_TX_OTHER, (b, r) => { kernelRx(r, 2, frame(64), { len: rings.rx.frameSize }); post(b, 2); }],
    ['tp_mac inside the header', STOP_TX_OTHER, (b, r) => { kernelRx(r, 2, frame(64), { mac: 4 }); post(b, 2); }],
    ['no guest buffer', STOP_RX_EMPTY, (_b, r) => kernelRx(r, 2, frame(64))],
    ['a guest buffer too small', STOP_RX_OTHER, (b, r) => { kernelRx(r, 2, frame(1000)); post(b, 2, 500); }],
    ['a chained guest buffer', STOP_RX_OTHER, (b, r) => {
      kernelRx(r, 2, frame(64));
      b.drv.addChain([{ addr: BUF + 0x22000, len: 12, write: true }, { addr: BUF + 0x23000, len: 2048, write: true }]);
    }],
  ];
  for (const [what, stop, third] of rxLeaves) {
    test(`RX ring -> guest stops in front of ${what} without consuming it`, () => {
      const b = side();
      const r = ringIo();
      for (let i = 0; i < 2; i++) { kernelRx(r, i, frame(64)); post(b, i); }
      third(b, r);
      assert.equal(r.io.fastReceive(b.q, 64, 12, DST, SRC), 2);
      assert.equal(stopReason, stop);
      assert.equal(b.q.lastUsed, 2);
      assert.notEqual(r.dv.getUint32(2 * rings.rx.frameSize, true) & TP_STATUS_USER, 0, 'the slot is still ours, for TypeScript');
      assert.ok(b.g.guardsIntact());
    });
  }

  test('guest TX -> a tap-like fd (a datagram socket here): one write per frame from guest memory; stops on other MACs and when the fd refuses, without consuming', () => {
    const [mine, peer] = dgramPair();
    try {
      setNonBlocking(mine, true);
      setNonBlocking(peer, true);
      const io = new TapIo(mine);
      const a = side();
      const lens = [14, 64, 1514, 4000];
      lens.forEach((l, i) => send(a, i, frame(l, DST, SRC, i)));
      send(a, 4, frame(64, 0x525400000099));
      assert.equal(io.fastSend(a.q, 64, 12, DST, SRC), lens.length);
      assert.equal(stopReason, STOP_MAC);
      assert.equal(a.q.lastAvail, lens.length);
      const buf = Buffer.alloc(65536);
      lens.forEach((l, i) => {
        assert.equal(Number(c.read(peer, buf, buf.length)), l);
        assert.deepEqual(new Uint8Array(buf.subarray(0, l)), frame(l, DST, SRC, i));
      });
      // Fill the socket until it refuses: the frame it refused stays in the ring.
      const b = side();
      let sent = 0;
      for (let round = 0; round < 200 && (stopReason as number) !== STOP_RX_EMPTY; round++) {
        for (let i = 0; i < 8; i++) send(b, i, frame(1514));
        sent += io.fastSend(b.q, 64, 12, DST, SRC);
        b.q.flushUsed();
        b.drv.takeUsed();
      }
      assert.equal(stopReason, STOP_RX_EMPTY, 'the socket filled up');
      assert.equal(b.q.lastAvail, sent, 'the refused frame was not consumed');
      // An offload header is never written as it is: the loop stops in front of it.
      while (Number(c.read(peer, buf, buf.length)) > 0) { /* drain the socket */ }
      const o = side();
      send(o, 0, frame(64));
      sendOffload(o, 1, frame(64), 1, 0);
      assert.equal(io.fastSend(o.q, 64, 12, DST, SRC), 1);
      assert.equal(stopReason, STOP_TX_OTHER);
      assert.equal(o.q.lastAvail, 1, 'the offload frame is still the next one');
    } finally {
      closeFd(mine);
      closeFd(peer);
    }
  });

  // PACKET_VNET_HDR / IFF_VNET_HDR: a virtio_net_hdr before each frame on the kernel's side.
  const V = PACKET_VNET_LEN;
  const vRings: PacketRings = { rx: ringGeometry(1518, 0, 64, V), tx: ringGeometry(1518, 0, 64, V) };
  const vTxBase = vRings.rx.blockSize * vRings.rx.blockCount;
  const vIo = (): { io: PacketRingIo; dv: DataView; u8: Uint8Array } => {
    const mem = new ArrayBuffer(ringsBytes(vRings));
    return { io: new PacketRingIo(-1, vRings, mem, () => true, () => {}, true), dv: new DataView(mem), u8: new Uint8Array(mem) };
  };

  test('with a vnet header: guest TX -> TX slot gets an all-zero header before the frame, tp_len counting it; a frame filling the slot still fits', () => {
    const a = side();
    const r = vIo();
    const cap = txCapacity(vRings.tx.frameSize, V);
    const lens = [60, 1514, cap];
    lens.forEach((l, i) => send(a, i, frame(l, DST, SRC, i)));
    // Garbage where the header goes: it must be overwritten.
    for (let i = 0; i < 3; i++) r.u8.fill(0xee, vTxBase + i * vRings.tx.frameSize + TX_DATA_OFFSET, vTxBase + (i + 1) * vRings.tx.frameSize);
    send(a, 3, frame(cap + 1));
    assert.equal(r.io.fastSend(a.q, 64, 12, DST, SRC), lens.length);
    assert.equal(stopReason, STOP_TX_OTHER, 'stops in front of a frame bigger than a slot less the header');
    lens.forEach((l, i) => {
      const slot = vTxBase + i * vRings.tx.frameSize;
      assert.equal(r.dv.getUint32(slot, true), TP_STATUS_SEND_REQUEST);
      assert.equal(r.dv.getUint32(slot + 4, true), V + l);
      assert.deepEqual(r.u8.subarray(slot + TX_DATA_OFFSET, slot + TX_DATA_OFFSET + V), new Uint8Array(V));
      assert.deepEqual(r.u8.subarray(slot + TX_DATA_OFFSET + V, slot + TX_DATA_OFFSET + V + l), frame(l, DST, SRC, i));
    });
  });

  test('with a vnet header: RX slot -> guest for plain (and DATA_VALID) frames; stops in front of NEEDS_CSUM or a gso_type, and of tp_mac leaving no room for the header', () => {
    const b = side();
    const r = vIo();
    const mac = RX_MAC_OFFSET + V;
    const put = (i: number, f: Uint8Array, hdr: number[], m = mac): void => {
      const slot = i * vRings.rx.frameSize;
      r.u8.set(Uint8Array.from(hdr), slot + m - V);
      r.u8.set(f, slot + m);
      r.dv.setUint32(slot + 4, f.length, true);
      r.dv.setUint32(slot + 8, f.length, true);
      r.dv.setUint16(slot + 12, m, true);
      r.dv.setUint32(slot, TP_STATUS_USER, true);
    };
    put(0, frame(64, DST, SRC, 0), [0, 0, 0, 0, 0, 0, 0, 0, 0, 0]);
    put(1, frame(1514, DST, SRC, 1), [2, 0, 0, 0, 0, 0, 0, 0, 0, 0]); // DATA_VALID: a plain frame
    for (let i = 0; i < 6; i++) post(b, i);
    assert.equal(r.io.fastReceive(b.q, 64, 12, DST, SRC), 2);
    assert.equal(stopReason, STOP_TX_EMPTY);
    for (let i = 0; i < 2; i++) {
      const got = b.g.read(BUF + 0x20000 + 0x1000 * i, 12 + (i ? 1514 : 64));
      assert.deepEqual(got.subarray(0, 12), Uint8Array.from([0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 1, 0]), 'a plain header for the guest');
      assert.deepEqual(got.subarray(12), frame(i ? 1514 : 64, DST, SRC, i));
    }
    for (const [hdr, m] of [[[1, 0, 0, 0, 0, 0, 34, 0, 16, 0], mac], [[0, 1, 54, 0, 0xa8, 5, 0, 0, 0, 0], mac], [[0, 0, 0, 0, 0, 0, 0, 0, 0, 0], 52 + V - 1]] as const) {
      put(2, frame(64), [...hdr], m);
      assert.equal(r.io.fastReceive(b.q, 64, 12, DST, SRC), 0);
      assert.equal(stopReason, STOP_TX_OTHER);
      assert.notEqual(r.dv.getUint32(2 * vRings.rx.frameSize, true) & TP_STATUS_USER, 0, 'the slot is still ours, for TypeScript');
    }
  });

  test('with a vnet header: guest TX -> tap writes an all-zero header and the frame in one datagram', () => {
    const [mine, peer] = dgramPair();
    try {
      setNonBlocking(mine, true);
      setNonBlocking(peer, true);
      const io = new TapIo(mine, true);
      const a = side();
      send(a, 0, frame(64));
      send(a, 1, frame(1514, DST, SRC, 1));
      assert.equal(io.fastSend(a.q, 64, 12, DST, SRC), 2);
      const buf = Buffer.alloc(65536);
      assert.equal(Number(c.read(peer, buf, buf.length)), V + 64);
      assert.deepEqual(new Uint8Array(buf.subarray(0, V + 64)), Uint8Array.from([...new Uint8Array(V), ...frame(64)]));
      assert.equal(Number(c.read(peer, buf, buf.length)), V + 1514);
      assert.deepEqual(new Uint8Array(buf.subarray(V, V + 1514)), frame(1514, DST, SRC, 1));
    } finally {
      closeFd(mine);
      closeFd(peer);
    }
  });

  test('refuses MACs that are no 48-bit numbers and headers of other sizes', () => {
    const a = side();
    const r = ringIo();
    send(a, 0, frame(64));
    for (const [d, s] of [[-1, SRC], [DST, 2 ** 48], [NaN, SRC]] as const) assert.equal(r.io.fastSend(a.q, 8, 12, d, s), 0);
    assert.equal(r.io.fastSend(a.q, 8, 11, DST, SRC), 0);
    assert.equal(r.io.fastSend(a.q, 8, 12, DST, SRC), 1);
  });
});
