// The switch with an uplink that carries virtio_net_hdr (PACKET_VNET_HDR),
// on mock guest rings and a PacketRingIo over plain memory with the test
// playing the kernel: a guest's GSO frame goes into the TX slot header and
// all (not segmented), a plain frame gets an all-zero header, a hostile
// header never reaches the ring (dropped, counted); a GSO skb from the
// kernel reaches a TSO guest as it is and a guest without offloads cut into
// checked segments, and a lying kernel header is dropped and counted too.
import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import { ringsBytes, type PacketRings } from '../../src/sys/packet.js';
import { PACKET_VNET_LEN, RX_MAC_OFFSET, ringGeometry, TP_STATUS_SEND_REQUEST, TP_STATUS_USER, TX_DATA_OFFSET } from '../../src/sys/tpacket.js';
import type { QueueSpec } from '../../src/vhost-user/dataplane/api.js';
import { GuestTxPipe, UplinkRxPipe } from '../../src/vhost-user/dataplane/pipes.js';
import { WorkerPort } from '../../src/vhost-user/dataplane/port.js';
import { SwitchCore } from '../../src/vhost-user/dataplane/switch-core.js';
import { offloadHeader, PacketRingIo } from '../../src/vhost-user/dataplane/uplink-io.js';
import { UPLINK } from '../../src/vhost-user/switch/fdb.js';
import { VEB } from '../../src/vhost-user/switch/forwarding.js';
import { CAN_ALL, F_NEEDS_CSUM, GSO_TCPV4, GSO_TCPV6, VnetHeader } from '../../src/vhost-user/switch/offload.js';
import { MockGuest, MockVirtq } from '../lib/mock-driver.js';
import { tcpChecksumOk, tcpFrame } from '../lib/tcp-frames.js';

const BUF = 0x100000;
const RXBUF = BUF + 0x200000;
const RX_SIZE = 0x11000;
const MAC = (n: number): number[] => [0x52, 0x54, 0, 0, 0, n];
const HOST = [0x52, 0x54, 0, 0, 0, 0x99];
const V = PACKET_VNET_LEN;

interface G { port: WorkerPort; rx: MockVirtq; tx: MockVirtq; g: MockGuest; sent: number }

function guest(sw: SwitchCore, id: number, offloads: number): G {
  const g = new MockGuest([{ gpa: 0, size: 0x10000, ua: 0x7f0000000000 }, { gpa: BUF, size: 0x400000, ua: 0x7f1000000000 }]);
  const port = new WorkerPort(id, 1);
  port.mem = g.mem;
  const drv = [MockVirtq.at(g, 64, 0x1000), MockVirtq.at(g, 64, 0x6000)];
  for (let q = 0; q < 2; q++) {
    const spec: QueueSpec = {
      size: 64, desc: drv[q]!.descUA, avail: drv[q]!.availUA, used: drv[q]!.usedUA, lastAvail: 0, eventIdx: true, indirect: true,
      mrgRxbuf: true, hdrLen: 12, kickFd: -1, callFd: -1, enabled: true, logAll: false, logUsedGpa: -1, sendOffloads: offloads, recvOffloads: offloads,
    };
    port.startQueue(q, spec);
  }
  sw.ports.set(id, port);
  sw.topo.set(id, VEB);
  for (let i = 0; i < 48; i++) drv[0]!.addChain([{ addr: RXBUF + RX_SIZE * i, len: RX_SIZE, write: true }]);
  return { port, rx: drv[0]!, tx: drv[1]!, g, sent: 0 };
}

function send(a: G, h: VnetHeader | null, frame: Uint8Array): void {
  const gpa = BUF + 0x11000 * a.sent++;
  const hb = new Uint8Array(12);
  h?.write(hb, 0);
  a.g.write(gpa, hb);
  a.g.write(gpa + 12, frame);
  a.tx.addChain([{ addr: gpa, len: 12 }, { addr: gpa + 12, len: frame.length }]);
}

function received(b: G): { hdr: VnetHeader; frame: Buffer }[] {
  return b.rx.takeUsed().map((u) => {
    const gpa = RXBUF + RX_SIZE * u.id;
    const hdr = new VnetHeader();
    hdr.read(b.g.read(gpa, 12), 0);
    return { hdr, frame: Buffer.from(b.g.read(gpa + 12, u.len - 12)) };
  });
}

const gsoHeader = (f: ReturnType<typeof tcpFrame>, type: number, mss: number): VnetHeader =>
  Object.assign(new VnetHeader(), { flags: F_NEEDS_CSUM, gsoType: type, gsoSize: mss, hdrLen: f.hdrEnd, csumStart: f.l4, csumOffset: 16 });

// 64 KiB slots, as uplink.ts makes them with offloads on.
const MAX = 65536 - RX_MAC_OFFSET - V - 4;
const rings: PacketRings = { rx: ringGeometry(MAX, 0, 8, V), tx: ringGeometry(MAX, 0, 8, V) };
const txBase = rings.rx.blockSize * rings.rx.blockCount;

function setup(vnet = true): { sw: SwitchCore; a: G; c: G; u8: Uint8Array; dv: DataView; run: () => void; up: UplinkRxPipe } {
  const sw = new SwitchCore(() => undefined);
  sw.now = Date.now();
  const mem = new ArrayBuffer(ringsBytes(rings));
  sw.uplink = new PacketRingIo(-1, rings, mem, () => true, () => {}, vnet);
  const a = guest(sw, 1, CAN_ALL), c = guest(sw, 3, 0);
  sw.refreshTopology();
  // Every MAC known: no flood copies beside the frames a test follows.
  sw.fdb.learn(0x525400000099, UPLINK, sw.now);
  sw.fdb.learn(0x525400000001, 1, sw.now);
  sw.fdb.learn(0x525400000003, 3, sw.now);
  const pipe = new GuestTxPipe(sw, a.port, a.port.queues[1]!);
  const up = new UplinkRxPipe(sw, sw.uplink);
  return { sw, a, c, u8: new Uint8Array(mem), dv: new DataView(mem), up, run: () => { for (let k = 0; k < 4; k++) pipe.run(); sw.flush(); } };
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

/** The kernel's part: a frame with its virtio_net_hdr into RX slot `i`. */
function kernelRx(u8: Uint8Array, dv: DataView, i: number, h: VnetHeader | null, frame: Uint8Array): void {
  const slot = i * rings.rx.frameSize;
  const mac = RX_MAC_OFFSET + V;
  const hb = new Uint8Array(V);
  h?.write(hb, 0);
  u8.set(hb, slot + mac - V);
  u8.set(frame, slot + mac);
  dv.setUint32(slot + 4, frame.length, true);
  dv.setUint32(slot + 8, frame.length, true);
  dv.setUint16(slot + 12, mac, true);
  dv.setUint32(slot, TP_STATUS_USER, true);
}

describe('switch: an uplink with a vnet header (PACKET_VNET_HDR)', () => {
  it('a guest GSO frame goes to the kernel as it is, header included; a plain one with a zero header', () => {
    for (const v6 of [false, true]) {
      const { a, u8, dv, run, sw } = setup();
      const f = tcpFrame({ v6, payload: 60000, tcpOpts: 12, dstMac: HOST, srcMac: MAC(1) });
      const h = gsoHeader(f, v6 ? GSO_TCPV6 : GSO_TCPV4, 1448);
      send(a, h, f.frame);
      const p = tcpFrame({ payload: 100, dstMac: HOST, srcMac: MAC(1) });
      send(a, null, p.frame);
      run();
      const slots = sentSlots(u8, dv);
      assert.equal(slots.length, 2);
      const want = new Uint8Array(V);
      h.write(want, 0);
      assert.deepEqual(slots[0]![0], want, 'the checked header');
      assert.deepEqual(slots[0]![1], f.frame);
      assert.deepEqual(slots[1]![0], new Uint8Array(V), 'a plain frame: all-zero header');
      assert.deepEqual(slots[1]![1], p.frame);
      assert.equal(a.port.stats.gsoPassed, 1);
      assert.equal(a.port.stats.gsoSegmented, 0);
      assert.equal(sw.uplinkStats.txFrames, 2);
    }
  });

  it('without a vnet header the same frame is segmented in software', () => {
    const { a, u8, dv, run } = setup(false);
    const f = tcpFrame({ payload: 5000, dstMac: HOST, srcMac: MAC(1) });
    send(a, gsoHeader(f, GSO_TCPV4, 1400), f.frame);
    run();
    assert.equal(a.port.stats.gsoSegmented, 1);
    // No header in front: the slots hold plain frames from TX_DATA_OFFSET.
    let n = 0;
    for (let i = 0; i < rings.tx.frameCount; i++) if (dv.getUint32(txBase + i * rings.tx.frameSize, true) === TP_STATUS_SEND_REQUEST) n++;
    assert.equal(n, 4);
    void u8;
  });

  it('a hostile header toward the kernel is dropped and counted, never sent (gso_size 0, hdr_len beyond the frame, csum_start past the end)', () => {
    const { a, u8, dv, run, sw } = setup();
    const f = tcpFrame({ payload: 3000, dstMac: HOST, srcMac: MAC(1) });
    const bad: Partial<VnetHeader>[] = [{ gsoSize: 0 }, { hdrLen: 60000 }, { csumStart: 0xfff0 }, { csumOffset: 0xfff0 }, { gsoType: 3 }, { gsoType: GSO_TCPV6 }];
    for (const x of bad) send(a, Object.assign(gsoHeader(f, GSO_TCPV4, 1448), x), f.frame);
    // A partial checksum alone, past the end of the frame.
    send(a, Object.assign(new VnetHeader(), { flags: F_NEEDS_CSUM, csumStart: f.frame.length - 1, csumOffset: 0 }), f.frame);
    send(a, null, f.frame);
    run();
    assert.equal(a.port.stats.badOffload, bad.length + 1);
    const slots = sentSlots(u8, dv);
    assert.equal(slots.length, 1, 'only the plain frame reached the ring');
    assert.deepEqual(slots[0]![1], f.frame);
    assert.equal(sw.uplinkStats.txFrames, 1);
  });

  it('a GSO skb from the kernel reaches a TSO guest as it is and a guest without offloads as checked segments', () => {
    const { a, c, u8, dv, up, sw } = setup();
    const toA = tcpFrame({ payload: 30000, tcpOpts: 12, dstMac: MAC(1), srcMac: HOST });
    const hA = gsoHeader(toA, GSO_TCPV4, 1448);
    const toC = tcpFrame({ v6: true, payload: 10000, dstMac: MAC(3), srcMac: HOST });
    kernelRx(u8, dv, 0, hA, toA.frame);
    kernelRx(u8, dv, 1, gsoHeader(toC, GSO_TCPV6, 1000), toC.frame);
    up.run();
    const gotA = received(a);
    assert.equal(gotA.length, 1);
    assert.deepEqual(gotA[0]!.frame, toA.frame);
    for (const k of ['flags', 'gsoType', 'gsoSize', 'hdrLen', 'csumStart', 'csumOffset'] as const) assert.equal(gotA[0]!.hdr[k], hA[k], k);
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
    assert.equal(sw.uplinkStats.rxFrames, 2);
    assert.equal(dv.getUint32(0, true) | dv.getUint32(rings.rx.frameSize, true), 0, 'slots handed back');
  });

  it('a lying header from the kernel side is dropped and counted; the next frame goes through', () => {
    const { a, u8, dv, up, sw } = setup();
    const f = tcpFrame({ payload: 3000, dstMac: MAC(1), srcMac: HOST });
    kernelRx(u8, dv, 0, Object.assign(gsoHeader(f, GSO_TCPV4, 1448), { gsoSize: 0 }), f.frame);
    kernelRx(u8, dv, 1, Object.assign(gsoHeader(f, GSO_TCPV4, 1448), { hdrLen: 9000 }), f.frame);
    kernelRx(u8, dv, 2, null, f.frame);
    up.run();
    assert.equal(sw.uplinkStats.badOffload, 2);
    const got = received(a);
    assert.equal(got.length, 1);
    assert.deepEqual(got[0]!.frame, f.frame);
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
    // GSO without NEEDS_CSUM: csum_start is not an offset to move.
    b.set([0, 4, 0xff, 0x00, 0x10, 0, 0, 0, 0, 0], 4);
    assert.deepEqual([...offloadHeader(b, 4, out, 4)!], [0, 4, 0x03, 0x01, 0x10, 0, 0, 0, 0, 0]);
  });
});
