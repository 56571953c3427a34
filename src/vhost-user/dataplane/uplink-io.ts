// Frames in and out of the switch's uplink, inside the data-path worker. Two
// kinds behind one interface (SwitchCore and UplinkRxPipe do not know which):
// - PacketRingIo (`--uplink DEV`): the AF_PACKET socket's mmap'ed TPACKET_V2
//   rings (layout: sys/tpacket.ts). A guest's frame is copied once, from its
//   TX buffers straight into a TX slot; one send() per batch hands all queued
//   slots to the kernel. Received frames are switched from their RX slot
//   (one copy, into the guest's RX buffer) and the slot handed back. No
//   syscall per frame in either direction: what the per-frame write()/read()
//   cost was the uplink's limit (README, benchmark section).
// - TapIo (`--br BR`): a tap has no ring (no vhost-net here to batch for us):
//   frames are read until the tap is empty or a batch is done, one read()
//   each; runs of guest frames are written by the C fast path, one write()
//   each straight from guest memory, a whole run per native call.
// A full TX ring or tap queue drops the frame (counted by the caller), as a
// NIC does: the loop never blocks on the uplink.
// With a vnet header (offloads on: uplink.ts), each frame in either direction
// has a struct virtio_net_hdr in front: plain frames get an all-zero one; a
// received one that asks for an offload goes to the sink beside the frame.
// GSO frames do not fit the rings' MTU-sized slots: PacketRingIo reads one
// whole from the socket where the kernel marked its slot TP_STATUS_COPY, and
// sends one through a ring-less socket after kicking the ring (in order).
import { readFd, writeFd } from '../../sys/libc.js';
import { mapShared, unmap, type Mapping } from '../../sys/mmap.js';
import { kickTxRing, ringsBytes, type PacketRings } from '../../sys/packet.js';
import { kickXsk, mapXsk, type XskTxInfo } from '../../sys/xsk.js';
import { CAN_ALL } from '../switch/offload.js';
import {
  PACKET_VNET_LEN, reinsertVlan, RX_BAD, RX_COPY, RX_FRAME, rxSlot, TP_STATUS_KERNEL, TP_STATUS_SEND_REQUEST, TX_DATA_OFFSET, txCapacity, txSlotHeader, type RxFrame,
} from '../../sys/tpacket.js';
import { type ChainScratch, MAX_FRAME_LEN, readFrame, type SplitQueue } from '../virtq/index.js';
import { fromPacket, packetRingBlock, packetRingNext, toPacket, toTap, toXsk, type PacketRingBlock } from '../virtq/native.js';
import { XskTx } from './xsk-tx.js';

/**
 * Where a received frame goes: the switch (buf[off, off + len)). `hdr`: its
 * virtio_net_hdr (10 bytes) when that asks for an offload (a partial
 * checksum, GSO), null for a plain frame.
 */
export type FrameSink = (buf: Uint8Array, off: number, len: number, hdr: Uint8Array | null) => void;

export interface UplinkIo {
  /** The fd the event mode watches for received frames. */
  readonly fd: number;
  /** The offloads (CAN_* of switch/offload.ts) the kernel takes from us and may hand us: CAN_ALL with a vnet header, else 0. */
  readonly offloads: number;
  /** The largest frame sendFlat() takes (a bigger GSO frame is segmented before). */
  readonly maxSend: number;
  /** Queues the frame of a guest TX chain (after its hdrLen header); false: dropped (full, too big). */
  sendChain(chain: ChainScratch, hdrLen: number): boolean;
  /** Queues buf[off, off + len), with virtio_net_hdr `hdr` (a checked one: only when `offloads` is not 0) or none; false: dropped. */
  sendFlat(buf: Uint8Array, off: number, len: number, hdr?: Uint8Array | null): boolean;
  /** Hands what was queued to the kernel (end of a batch). */
  flush(): void;
  /** Passes up to `max` received frames to `sink`; returns how many slots it consumed. `bad` counts slots without a usable frame. */
  receive(max: number, sink: FrameSink): number;
  /** Slots consumed that held no usable frame (truncated, out of bounds), since the start. */
  readonly bad: number;
  /**
   * The native fast path (virtq/native.ts): up to `max` frames from MAC
   * `src` to MAC `dst` from guest TX queue `tx` into the uplink, each one
   * descriptor; stops in front of anything else. 0 where it does not apply.
   */
  fastSend(tx: SplitQueue, max: number, hdrLen: number, dst: number, src: number): number;
  /** The same from the uplink into guest RX queue `rx`. */
  fastReceive(rx: SplitQueue, max: number, hdrLen: number, dst: number, src: number): number;
  close(): void;
}

// TX slot states that mean "the kernel still owns it" (SEND_REQUEST, SENDING).
const TX_BUSY = 1 | 2;

/** Frames bigger than a ring slot, with their vnet header: read from the ring's socket, written to a ring-less one. */
export interface WholeFrameIo {
  /** One frame queued whole on the socket (header first) into buf; its length, or <= 0 for none. */
  read(buf: Uint8Array): number;
  /** Sends buf[0, len) (header first); false: refused. */
  write(buf: Uint8Array, len: number): boolean;
}

/**
 * The rings of packet socket `fd` (with PACKET_VNET_HDR if `vnetHdr`), mapped
 * into this thread (unmapped by close()); `senderFd`: the ring-less socket
 * for frames bigger than a TX slot (uplink.ts), or -1; `xsk`: an AF_XDP
 * socket that sends the plain frames instead of the TX ring (uplink.ts).
 */
export function openPacketRingIo(fd: number, rings: PacketRings, vnetHdr = false, senderFd = -1, xsk: XskTxInfo | null = null): PacketRingIo {
  const map: Mapping = mapShared(fd, ringsBytes(rings));
  const whole: WholeFrameIo | null = vnetHdr && senderFd >= 0 ? {
    read: (buf) => readFd(fd, buf, buf.length),
    write: (buf, len) => writeFd(senderFd, buf, len) === len,
  } : null;
  let xmaps: ReturnType<typeof mapXsk> | null = null;
  try {
    xmaps = xsk ? mapXsk(xsk) : null;
    const release = (): void => { unmap(map); xmaps?.close(); };
    const io = new PacketRingIo(fd, rings, map.buffer, () => kickTxRing(fd), release, vnetHdr, whole);
    if (xsk && xmaps) io.sendThrough(new XskTx(xsk, xmaps.umem, xmaps.tx, xmaps.cq, () => kickXsk(xsk.fd), io.maxRingFrame));
    return io;
  } catch (e) {
    unmap(map);
    xmaps?.close();
    throw e;
  }
}

/**
 * Copies the virtio_net_hdr at b[at] into `out` when it asks for an offload
 * (NEEDS_CSUM or a gso_type; DATA_VALID alone is a plain frame) and returns
 * `out`, else null. `shift`: bytes inserted in front of the L3 header since
 * the kernel wrote it (a VLAN tag put back), added to its offsets.
 */
export function offloadHeader(b: Uint8Array, at: number, out: Uint8Array, shift = 0): Uint8Array | null {
  if (((b[at]! & 1) | b[at + 1]!) === 0) return null;
  out.set(b.subarray(at, at + PACKET_VNET_LEN), 0);
  if (shift !== 0) {
    const hdrLen = out[2]! | (out[3]! << 8);
    const start = out[6]! | (out[7]! << 8);
    // Past 0xffff: 0xffff, which no frame of ours is long enough for (validation drops it).
    const h = Math.min(hdrLen + shift, 0xffff), c = Math.min(start + shift, 0xffff);
    if (hdrLen !== 0) { out[2] = h & 0xff; out[3] = h >>> 8; }
    if (out[0]! & 1) { out[6] = c & 0xff; out[7] = c >>> 8; }
  }
  return out;
}

/**
 * The ring protocol over `mem` (the RX ring, then the TX ring, as the kernel
 * lays them out), with the kick and the unmapping given: unit tests run it
 * over plain memory playing the kernel's part.
 */
export class PacketRingIo implements UplinkIo {
  bad = 0;
  readonly offloads: number;
  private readonly vnet: number;
  private readonly rxHdr = new Uint8Array(PACKET_VNET_LEN);
  private readonly u8: Uint8Array;
  private readonly dv: DataView;
  private readonly i32: Int32Array;
  private readonly rxFrames: number;
  private readonly rxSize: number;
  private readonly txBase: number;
  private readonly txFrames: number;
  private readonly txSize: number;
  private readonly txMax: number;
  readonly maxSend: number;
  // A frame with its header, for the WholeFrameIo both ways.
  private readonly whole = new Uint8Array(PACKET_VNET_LEN + MAX_FRAME_LEN);
  private rxNext = 0;
  private txNext = 0;
  private queued = 0;
  private readonly f: RxFrame = { off: 0, len: 0, vlanTci: -1, vlanTpid: 0, hdr: -1 };
  private readonly tagged = new Uint8Array(MAX_FRAME_LEN);
  // The rings as the C fast path sees them (null without it).
  private readonly rxBlock: PacketRingBlock | null;
  private readonly txBlock: PacketRingBlock | null;
  // Plain frames leave through this AF_XDP socket when there is one; frames
  // with a vnet header (offloads) still take the TX ring, which carries it.
  private xsk: XskTx | null = null;

  constructor(readonly fd: number, rings: PacketRings, mem: ArrayBuffer, private readonly kick: () => boolean, private readonly release: () => void,
    vnetHdr = false, private readonly wholeIo: WholeFrameIo | null = null) {
    if (mem.byteLength < ringsBytes(rings)) throw new RangeError(`ring memory of ${mem.byteLength} bytes, ${ringsBytes(rings)} needed`);
    this.u8 = new Uint8Array(mem);
    this.dv = new DataView(mem);
    this.i32 = new Int32Array(mem);
    this.rxFrames = rings.rx.frameCount;
    this.rxSize = rings.rx.frameSize;
    this.txBase = rings.rx.blockSize * rings.rx.blockCount;
    this.txFrames = rings.tx.frameCount;
    this.txSize = rings.tx.frameSize;
    this.vnet = vnetHdr ? PACKET_VNET_LEN : 0;
    this.offloads = vnetHdr ? CAN_ALL : 0;
    this.txMax = txCapacity(this.txSize, this.vnet);
    this.maxSend = wholeIo !== null && vnetHdr ? MAX_FRAME_LEN : this.txMax;
    this.rxBlock = packetRingBlock(mem, 0, this.rxSize, this.rxFrames);
    this.txBlock = packetRingBlock(mem, this.txBase, this.txSize, this.txFrames);
  }

  /** The largest plain frame a TX slot holds (after the vnet header). */
  get maxRingFrame(): number { return this.txMax; }

  /** Sends plain frames through `xsk` from now on (the TX ring keeps the ones with a vnet header). */
  sendThrough(xsk: XskTx): void { this.xsk = xsk; }

  // Frames leave in the order the switch queued them, across both sockets:
  // before queueing on one, what the other holds is handed to the kernel
  // (kickRing() before the AF_XDP socket, beforeRing() before the TX ring).
  /** Hands the TX ring's marked slots to the kernel; a failed kick (ENOBUFS) leaves them marked for the next one. */
  private kickRing(): void {
    if (this.queued !== 0 && this.kick()) this.queued = 0;
  }

  private beforeRing(): void {
    this.xsk?.flush(); // returns at once when nothing is unsent
  }

  fastSend(tx: SplitQueue, max: number, hdrLen: number, dst: number, src: number): number {
    const x = this.xsk;
    if (x !== null) {
      if (x.block === null) return 0;
      this.kickRing();
      return toXsk(tx, x.block, max, hdrLen, dst, src);
    }
    const b = this.txBlock;
    if (b === null) return 0;
    const n = toPacket(tx, b, this.txNext, max, hdrLen, this.vnet, dst, src);
    this.txNext = packetRingNext(b);
    this.queued += n;
    return n;
  }

  fastReceive(rx: SplitQueue, max: number, hdrLen: number, dst: number, src: number): number {
    const b = this.rxBlock;
    if (b === null) return 0;
    const n = fromPacket(b, this.rxNext, rx, max, hdrLen, this.vnet, dst, src);
    this.rxNext = packetRingNext(b);
    return n;
  }

  /** Byte offset of the next free TX slot, or -1 when the kernel still owns it (ring full). */
  private txSlot(): number {
    const slot = this.txBase + this.txNext * this.txSize;
    // The kernel sets a slot back to AVAILABLE once the frame left (or was
    // skipped as malformed, PACKET_LOSS); anything else it wrote we reuse.
    if (Atomics.load(this.i32, slot >> 2) & TX_BUSY) return -1;
    return slot;
  }

  /** Marks the slot's frame of `len` bytes (after its vnet header) for sending. */
  private commit(slot: number, len: number): void {
    txSlotHeader(this.dv, slot, this.vnet + len);
    // Release: the frame and header are in place before the kernel may see the slot.
    Atomics.store(this.i32, slot >> 2, TP_STATUS_SEND_REQUEST);
    this.txNext = this.txNext + 1 === this.txFrames ? 0 : this.txNext + 1;
    this.queued++;
  }

  sendChain(chain: ChainScratch, hdrLen: number): boolean {
    const len = chain.readable - hdrLen;
    if (len < 0 || len > this.txMax) return false;
    if (this.xsk !== null && len <= this.xsk.maxLen) {
      this.kickRing();
      return this.xsk.putChain(chain, hdrLen);
    }
    this.beforeRing();
    const slot = this.txSlot();
    if (slot < 0) return false;
    const at = slot + TX_DATA_OFFSET;
    if (readFrame(chain, hdrLen, this.u8, at + this.vnet) !== len) return false;
    this.u8.fill(0, at, at + this.vnet);
    this.commit(slot, len);
    return true;
  }

  sendFlat(buf: Uint8Array, off: number, len: number, hdr: Uint8Array | null = null): boolean {
    if (!(len >= 0 && len <= this.maxSend && off >= 0 && off + len <= buf.length)) return false;
    if (hdr !== null && this.vnet === 0) return false;
    if (hdr === null && this.xsk !== null && len <= this.xsk.maxLen) {
      this.kickRing();
      return this.xsk.put(buf, off, len);
    }
    if (len > this.txMax) return this.sendWhole(buf, off, len, hdr);
    this.beforeRing();
    const slot = this.txSlot();
    if (slot < 0) return false;
    const at = slot + TX_DATA_OFFSET;
    if (hdr !== null) this.u8.set(hdr.subarray(0, PACKET_VNET_LEN), at);
    else this.u8.fill(0, at, at + this.vnet);
    this.u8.set(buf.subarray(off, off + len), at + this.vnet);
    this.commit(slot, len);
    return true;
  }

  /** A frame bigger than a slot: after what the ring holds (kicked first, so it does not overtake), through the ring-less socket. */
  private sendWhole(buf: Uint8Array, off: number, len: number, hdr: Uint8Array | null): boolean {
    const io = this.wholeIo!;
    this.flush();
    const w = this.whole;
    const v = this.vnet;
    if (hdr !== null) w.set(hdr.subarray(0, v), 0);
    else w.fill(0, 0, v);
    w.set(buf.subarray(off, off + len), v);
    return io.write(w, v + len);
  }

  flush(): void {
    this.kickRing();
    this.xsk?.flush();
  }

  receive(max: number, sink: FrameSink): number {
    const i32 = this.i32;
    const f = this.f;
    let n = 0;
    for (; n < max; n++) {
      const slot = this.rxNext * this.rxSize;
      // Acquire: the slot's header and frame are read only after its status.
      const status = Atomics.load(i32, slot >> 2);
      const r = rxSlot(this.dv, slot, this.rxSize, status, f, this.vnet);
      if (r !== RX_FRAME && r !== RX_BAD && r !== RX_COPY) break;
      if (r === RX_BAD) this.bad++;
      else if (r === RX_COPY) this.receiveWhole(sink);
      else if (f.vlanTci < 0) sink(this.u8, f.off, f.len, f.hdr < 0 ? null : offloadHeader(this.u8, f.hdr, this.rxHdr));
      else {
        // The kernel took the tag off into the header: the guest gets it back in the frame.
        const len = reinsertVlan(this.u8, f, this.tagged);
        if (len < 0) this.bad++;
        else sink(this.tagged, 0, len, f.hdr < 0 ? null : offloadHeader(this.u8, f.hdr, this.rxHdr, 4));
      }
      // Release: done with the slot before the kernel may rewrite it.
      Atomics.store(i32, slot >> 2, TP_STATUS_KERNEL);
      this.rxNext = this.rxNext + 1 === this.rxFrames ? 0 : this.rxNext + 1;
    }
    return n;
  }

  /** The frame of a TP_STATUS_COPY slot, read whole from the socket (f holds the slot's VLAN tag). */
  private receiveWhole(sink: FrameSink): void {
    const v = this.vnet;
    const w = this.whole;
    const n = this.wholeIo === null || v === 0 ? -1 : this.wholeIo.read(w);
    if (n < v + 14) { this.bad++; return; }
    const f = this.f;
    if (f.vlanTci < 0) { sink(w, v, n - v, offloadHeader(w, 0, this.rxHdr)); return; }
    f.off = v;
    f.len = n - v;
    const len = reinsertVlan(w, f, this.tagged);
    if (len < 0) this.bad++;
    else sink(this.tagged, 0, len, offloadHeader(w, 0, this.rxHdr, 4));
  }

  close(): void {
    this.release();
  }
}

export class TapIo implements UplinkIo {
  bad = 0;
  readonly maxSend = MAX_FRAME_LEN;
  readonly offloads: number;
  private readonly vnet: number;
  private readonly flat = Buffer.allocUnsafe(PACKET_VNET_LEN + MAX_FRAME_LEN);
  private readonly inbuf = Buffer.allocUnsafe(PACKET_VNET_LEN + MAX_FRAME_LEN);
  private readonly rxHdr = new Uint8Array(PACKET_VNET_LEN);
  /** `vnetHdr`: the tap was made with IFF_VNET_HDR and a 10-byte header (uplink.ts). */
  constructor(readonly fd: number, vnetHdr = false) {
    this.vnet = vnetHdr ? PACKET_VNET_LEN : 0;
    this.offloads = vnetHdr ? CAN_ALL : 0;
  }

  fastSend(tx: SplitQueue, max: number, hdrLen: number, dst: number, src: number): number {
    return toTap(tx, this.fd, max, hdrLen, this.vnet, dst, src);
  }

  // A tap has no ring to read from: each frame is one read() into our buffer.
  fastReceive(): number { return 0; }

  sendChain(chain: ChainScratch, hdrLen: number): boolean {
    const v = this.vnet;
    const len = readFrame(chain, hdrLen, this.flat, v);
    if (len < 0) return false;
    this.flat.fill(0, 0, v);
    return this.write(this.flat, v + len);
  }

  sendFlat(buf: Uint8Array, off: number, len: number, hdr: Uint8Array | null = null): boolean {
    const v = this.vnet;
    if (!(len > 0 && off >= 0 && off + len <= buf.length) || (hdr !== null && v === 0)) return false;
    if (v === 0) return this.write(off === 0 ? buf : buf.subarray(off, off + len), len);
    // Header and frame in one write(): a copy, as a tap takes a frame whole.
    if (hdr !== null) this.flat.set(hdr.subarray(0, v), 0);
    else this.flat.fill(0, 0, v);
    this.flat.set(buf.subarray(off, off + len), v);
    return this.write(this.flat, v + len);
  }

  // A full tap queue (EAGAIN) or a frame above the MTU (EINVAL/EMSGSIZE) drops it.
  private write(b: Uint8Array, len: number): boolean {
    return writeFd(this.fd, b, len) === len;
  }

  flush(): void {}

  receive(max: number, sink: FrameSink): number {
    let n = 0;
    for (; n < max; n++) {
      const len = readFd(this.fd, this.inbuf, this.inbuf.length);
      if (len <= 0) break; // EAGAIN: nothing queued
      const v = this.vnet;
      if (len < v) { this.bad++; continue; }
      sink(this.inbuf, v, len - v, v === 0 ? null : offloadHeader(this.inbuf, 0, this.rxHdr));
    }
    return n;
  }

  close(): void {}
}
