// The switch with an uplink that carries virtio_net_hdr (PACKET_VNET_HDR),
// on mock guest rings and a PacketRingIo over plain memory with the test
// playing the kernel (MTU-sized slots; the socket's queue of whole frames
// and the ring-less sender as arrays): a guest's GSO frame goes to the
// kernel with its header, after the plain frames queued before it (not
// segmented), a plain frame gets an all-zero header, a hostile header never
// reaches the kernel (dropped, counted); a GSO skb from the kernel (slot
// marked TP_STATUS_COPY, frame whole on the socket) reaches a TSO guest as
// it is and a guest without offloads cut into checked segments, and a lying
// kernel header is dropped and counted too.
import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import { ringsBytes, type PacketRings } from '../../../../src/sys/packet.js';
import { PACKET_VNET_LEN, RX_MAC_OFFSET, ringGeometry, TP_STATUS_COPY, TP_STATUS_SEND_REQUEST, TP_STATUS_USER, TX_DATA_OFFSET, TP_STATUS_VLAN_VALID } from '../../../../src/sys/tpacket.js';
import { GuestTxPipe, UplinkRxPipe } from '../../../../src/vhost-user/dataplane/pipes.js';
import { SwitchCore } from '../../../../src/vhost-user/dataplane/switch-core.js';
import { offloadHeader, PacketRingIo } from '../../../../src/vhost-user/dataplane/uplink-io.js';
import { UPLINK } from '../../../../src/vhost-user/switch/fdb.js';
import { CAN_ALL, F_NEEDS_CSUM, GSO_TCPV4, GSO_TCPV6, VnetHeader } from '../../../../src/vhost-user/switch/offload.js';
import { gsoHeader, guestMac as MAC, offloadGuest, type OffloadGuest, receivedWithHeader as received, sendWithHeader as send } from '../../../lib/offload-guest.js';
import { tcpChecksumOk, tcpFrame } from '../../../lib/tcp-frames.js';

const HOST = [0x52, 0x54, 0, 0, 0, 0x99];
const V = PACKET_VNET_LEN;

// MTU-sized slots with room for the header, as uplink.ts makes them with offloads on.
const rings: PacketRings = { rx: ringGeometry(1518, 0, 64, V), tx: ringGeometry(1518, 0, 64, V) };
const txBase = rings.rx.blockSize * rings.rx.blockCount;

interface Kernel {
  /** Frames (header first) queued whole on the socket, for TP_STATUS_COPY slots. */
  queue: Uint8Array[];
  /** What the ring-less sender got, and how many TX ring slots were marked when it did. */
  sent: { bytes: Buffer; ringBefore: number }[];
  kicks: number;
}

function setup(vnet = true): { sw: SwitchCore; a: OffloadGuest; c: OffloadGuest; u8: Uint8Array; dv: DataView; run: () => void; up: UplinkRxPipe; k: Kernel } {
  const sw = new SwitchCore(() => undefined);
  sw.now = Date.now();
  const mem = new ArrayBuffer(ringsBytes(rings));
  const k: Kernel = { queue: [], sent: [], kicks: 0 };
  const whole = {
    read: (buf: Uint8Array): number => { const f = k.queue.shift(); if (!f) return -1; buf.set(f, 0); return f.length; },
    write: (buf: Uint8Array, len: number): boolean => { k.sent.push({ bytes: Buffer.from(buf.subarray(0, len)), ringBefore: k.kicks }); return true; },
  };
  sw.uplink = new PacketRingIo(-1, rings, mem, () => { k.kicks++; return true; }, () => {}, vnet, vnet ? whole : null);
  const a = offloadGuest(sw, 1, CAN_ALL), c = offloadGuest(sw, 3, 0);
  sw.refreshTopology();
  // Every MAC known: no flood copies beside the frames a test follows.
  sw.fdb.learn(0x525400000099, UPLINK, sw.now);
  sw.fdb.learn(0x525400000001, 1, sw.now);
  sw.fdb.learn(0x525400000003, 3, sw.now);
  const pipe = new GuestTxPipe(sw, a.port, a.port.queues[1]!);
  const up = new UplinkRxPipe(sw, sw.uplink);
  return { sw, a, c, k, u8: new Uint8Array(mem), dv: new DataView(mem), up, run: () => { for (let k = 0; k < 4; k++) pipe.run(); sw.flush(); } };
}

/** TX slots the switch marked for sending: [header bytes, frame]. */
function sentSlots(u8: Uint8Array, dv: DataView): [Uint8Array, Buffer][] {
  const out: [Uint8Array, Buffer][] = [];
  for (let i = 0; i < rings.tx.frameCount; i++) {
    const slot = txBase + i * rings.tx.frameSize;
    if (dv.getUint32(slot, true) !== TP_STATUS_SEND_REQUEST) continue;
    const len = dv.getUint32(slot + 4, true);
    out.push([u8.slice(slot + TX_DATA_OFFSET, slot + TX_DATA_OFFSET + V), Buffer.from(u8.subarray(slot + TX_DATA_OFFSET + V, slot + TX_DATA_OFFSET + len))]);
  }
  return out;
}

/**
 * The kernel's part: a frame with its virtio_net_hdr into RX slot `i`; one
 * bigger than the slot cut there, marked TP_STATUS_COPY and queued whole.
 */
function kernelRx(k: Kernel, u8: Uint8Array, dv: DataView, i: number, h: VnetHeader | null, frame: Uint8Array, vlanTci = -1): void {
  const slot = i * rings.rx.frameSize;
  const mac = RX_MAC_OFFSET + V;
  const hb = new Uint8Array(V);
  h?.write(hb, 0);
  const snap = Math.min(frame.length, rings.rx.frameSize - mac);
  u8.set(hb, slot + mac - V);
  u8.set(frame.subarray(0, snap), slot + mac);
  dv.setUint32(slot + 4, frame.length, true);
  dv.setUint32(slot + 8, snap, true);
  dv.setUint16(slot + 12, mac, true);
  dv.setUint16(slot + 24, vlanTci < 0 ? 0 : vlanTci, true);
  let status = TP_STATUS_USER | (vlanTci < 0 ? 0 : TP_STATUS_VLAN_VALID);
  if (snap < frame.length) {
    status |= TP_STATUS_COPY;
    k.queue.push(Uint8Array.from([...hb, ...frame]));
  }
  dv.setUint32(slot, status, true);
}

describe('switch: an uplink with a vnet header (PACKET_VNET_HDR)', () => {
  it('a guest GSO frame goes to the kernel as it is, header included, after the plain frame before it; a plain one with a zero header', () => {
    for (const v6 of [false, true]) {
      const { a, u8, dv, run, sw, k } = setup();
      const p = tcpFrame({ payload: 100, dstMac: HOST, srcMac: MAC(1) });
      send(a, null, p.frame);
      const f = tcpFrame({ v6, payload: 60000, tcpOpts: 12, dstMac: HOST, srcMac: MAC(1) });
      const h = gsoHeader(f, v6 ? GSO_TCPV6 : GSO_TCPV4, 1448);
      send(a, h, f.frame);
      // A partial checksum that fits a slot goes through the ring with its header.
      const q = tcpFrame({ payload: 200, dstMac: HOST, srcMac: MAC(1) });
      const hq = Object.assign(new VnetHeader(), { flags: F_NEEDS_CSUM, csumStart: q.l4, csumOffset: 16 });
      send(a, hq, q.frame);
      run();
      const slots = sentSlots(u8, dv);
      assert.equal(slots.length, 2);
      assert.deepEqual(slots[0]![0], new Uint8Array(V), 'a plain frame: all-zero header');
      assert.deepEqual(slots[0]![1], p.frame);
      const wantQ = new Uint8Array(V);
      hq.write(wantQ, 0);
      assert.deepEqual(slots[1]![0], wantQ);
      assert.deepEqual(slots[1]![1], q.frame);
      const want = new Uint8Array(V);
      h.write(want, 0);
      assert.equal(k.sent.length, 1, 'the GSO frame went around the ring');
      assert.deepEqual(k.sent[0]!.bytes, Buffer.concat([want, f.frame]), 'the checked header, then the frame');
      assert.equal(k.sent[0]!.ringBefore, 1, 'the ring (holding the plain frame) was kicked first');
      assert.equal(a.port.stats.gsoPassed, 1);
      assert.equal(a.port.stats.gsoSegmented, 0);
      assert.equal(sw.uplinkStats.txFrames, 3);
    }
  });

  it('without a vnet header the same frame is segmented in software', () => {
    const { a, u8, dv, run, k } = setup(false);
    const f = tcpFrame({ payload: 5000, dstMac: HOST, srcMac: MAC(1) });
    send(a, gsoHeader(f, GSO_TCPV4, 1400), f.frame);
    run();
    assert.equal(a.port.stats.gsoSegmented, 1);
    // No header in front: the slots hold plain frames from TX_DATA_OFFSET.
    let n = 0;
    for (let i = 0; i < rings.tx.frameCount; i++) if (dv.getUint32(txBase + i * rings.tx.frameSize, true) === TP_STATUS_SEND_REQUEST) n++;
    assert.equal(n, 4);
    assert.equal(k.sent.length, 0);
    void u8;
  });

  it('a hostile header toward the kernel is dropped and counted, never sent (gso_size 0, hdr_len beyond the frame, csum_start past the end)', () => {
    const { a, u8, dv, run, sw, k } = setup();
    const f = tcpFrame({ payload: 3000, dstMac: HOST, srcMac: MAC(1) });
    const bad: Partial<VnetHeader>[] = [{ gsoSize: 0 }, { hdrLen: 60000 }, { csumStart: 0xfff0 }, { csumOffset: 0xfff0 }, { gsoType: 3 }, { gsoType: GSO_TCPV6 }];
    for (const x of bad) send(a, Object.assign(gsoHeader(f, GSO_TCPV4, 1448), x), f.frame);
    // A partial checksum alone, past the end of the frame.
    send(a, Object.assign(new VnetHeader(), { flags: F_NEEDS_CSUM, csumStart: f.frame.length - 1, csumOffset: 0 }), f.frame);
    const p = tcpFrame({ payload: 500, dstMac: HOST, srcMac: MAC(1) });
    send(a, null, p.frame);
    run();
    assert.equal(a.port.stats.badOffload, bad.length + 1);
    const slots = sentSlots(u8, dv);
    assert.equal(slots.length, 1, 'only the plain frame reached the kernel');
    assert.deepEqual(slots[0]![1], p.frame);
    assert.equal(k.sent.length, 0);
    assert.equal(sw.uplinkStats.txFrames, 1);
  });

  it('a GSO skb from the kernel reaches a TSO guest as it is and a guest without offloads as checked segments', () => {
    const { a, c, u8, dv, up, sw, k } = setup();
    const toA = tcpFrame({ payload: 30000, tcpOpts: 12, dstMac: MAC(1), srcMac: HOST });
    const hA = gsoHeader(toA, GSO_TCPV4, 1448);
    const toC = tcpFrame({ v6: true, payload: 10000, dstMac: MAC(3), srcMac: HOST });
    kernelRx(k, u8, dv, 0, hA, toA.frame);
    kernelRx(k, u8, dv, 1, gsoHeader(toC, GSO_TCPV6, 1000), toC.frame);
    // A partial checksum in a slot of its own, for A.
    const small = tcpFrame({ payload: 300, dstMac: MAC(1), srcMac: HOST });
    const hs = Object.assign(new VnetHeader(), { flags: F_NEEDS_CSUM, csumStart: small.l4, csumOffset: 16 });
    kernelRx(k, u8, dv, 2, hs, small.frame);
    up.run();
    const gotA = received(a);
    assert.equal(gotA.length, 2);
    assert.deepEqual(gotA[0]!.frame, toA.frame);
    for (const x of ['flags', 'gsoType', 'gsoSize', 'hdrLen', 'csumStart', 'csumOffset'] as const) assert.equal(gotA[0]!.hdr[x], hA[x], x);
    assert.deepEqual(gotA[1]!.frame, small.frame);
    assert.equal(gotA[1]!.hdr.flags, F_NEEDS_CSUM);
    assert.equal(gotA[1]!.hdr.csumStart, small.l4);
    assert.equal(k.queue.length, 0, 'both whole frames read');
    const gotC = received(c);
    assert.equal(gotC.length, 10);
    let payload = Buffer.alloc(0);
    for (const s of gotC) {
      assert.ok(s.hdr.plain);
      assert.ok(tcpChecksumOk(s.frame, toC.l3, toC.l4, true));
      payload = Buffer.concat([payload, s.frame.subarray(toC.hdrEnd)]);
    }
    assert.deepEqual(payload, toC.payload);
    assert.equal(sw.uplinkStats.gsoPassed, 1);
    assert.equal(sw.uplinkStats.gsoSegmented, 1);
    assert.equal(sw.uplinkStats.rxFrames, 3);
    assert.equal(dv.getUint32(0, true) | dv.getUint32(rings.rx.frameSize, true), 0, 'slots handed back');
  });

  it('a lying header from the kernel side is dropped and counted; the next frame goes through', () => {
    const { a, u8, dv, up, sw, k } = setup();
    const f = tcpFrame({ payload: 3000, dstMac: MAC(1), srcMac: HOST });
    kernelRx(k, u8, dv, 0, Object.assign(gsoHeader(f, GSO_TCPV4, 1448), { gsoSize: 0 }), f.frame);
    kernelRx(k, u8, dv, 1, Object.assign(gsoHeader(f, GSO_TCPV4, 1448), { hdrLen: 9000 }), f.frame);
    kernelRx(k, u8, dv, 2, null, f.frame);
    // A COPY slot whose whole frame is not on the socket: a bad slot, counted.
    kernelRx(k, u8, dv, 3, null, f.frame);
    k.queue.pop();
    up.run();
    assert.equal(sw.uplinkStats.badOffload, 2);
    assert.equal(sw.uplinkStats.rxDropped, 3, 'two bad headers and the missing frame');
    const got = received(a);
    assert.equal(got.length, 1);
    assert.deepEqual(got[0]!.frame, f.frame);
  });

  it('a GSO frame with a VLAN tag the kernel took off: tag put back, offsets moved by 4, passed as it is', () => {
    const { a, u8, dv, up, k } = setup();
    const tagged = tcpFrame({ payload: 9000, vlan: 7, dstMac: MAC(1), srcMac: HOST });
    const untagged = Buffer.concat([tagged.frame.subarray(0, 12), tagged.frame.subarray(16)]);
    const h = Object.assign(new VnetHeader(), { flags: F_NEEDS_CSUM, gsoType: GSO_TCPV4, gsoSize: 1448, hdrLen: tagged.hdrEnd - 4, csumStart: tagged.l4 - 4, csumOffset: 16 });
    kernelRx(k, u8, dv, 0, h, untagged, 7);
    up.run();
    const got = received(a);
    assert.equal(got.length, 1);
    assert.deepEqual(got[0]!.frame, tagged.frame);
    assert.equal(got[0]!.hdr.csumStart, tagged.l4);
    assert.equal(got[0]!.hdr.hdrLen, tagged.hdrEnd);
  });
});

describe('uplink: offloadHeader (the vnet header a received frame carries)', () => {
  it('null for a plain frame or DATA_VALID alone; a copy otherwise; offsets moved past a VLAN tag put back', () => {
    const out = new Uint8Array(V);
    const b = new Uint8Array(20);
    assert.equal(offloadHeader(b, 4, out), null);
    b[4] = 2; // VIRTIO_NET_HDR_F_DATA_VALID
    assert.equal(offloadHeader(b, 4, out), null);
    // NEEDS_CSUM, TCPV4, hdr_len 66, gso_size 1448, csum_start 34, csum_offset 16 (little-endian).
    b.set([1, 1, 66, 0, 0xa8, 0x05, 34, 0, 16, 0], 4);
    assert.deepEqual([...offloadHeader(b, 4, out)!], [1, 1, 66, 0, 0xa8, 0x05, 34, 0, 16, 0]);
    assert.deepEqual([...offloadHeader(b, 4, out, 4)!], [1, 1, 70, 0, 0xa8, 0x05, 38, 0, 16, 0]);
    // Offsets near the top saturate instead of wrapping to small (valid-looking) ones.
    b.set([1, 0, 0xfe, 0xff, 0, 0, 0xfd, 0xff, 0, 0], 4);
    assert.deepEqual([...offloadHeader(b, 4, out, 4)!], [1, 0, 0xff, 0xff, 0, 0, 0xff, 0xff, 0, 0]);
    // GSO without NEEDS_CSUM: csum_start is not an offset to move.
    b.set([0, 4, 0xff, 0x00, 0x10, 0, 0, 0, 0, 0], 4);
    assert.deepEqual([...offloadHeader(b, 4, out, 4)!], [0, 4, 0x03, 0x01, 0x10, 0, 0, 0, 0, 0]);
  });
});
