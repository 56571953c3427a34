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
import { readFd, writeFd } from '../../sys/libc.js';
import { mapShared, unmap, type Mapping } from '../../sys/mmap.js';
import { kickTxRing, ringsBytes, type PacketRings } from '../../sys/packet.js';
import {
  reinsertVlan, RX_BAD, RX_FRAME, rxSlot, TP_STATUS_KERNEL, TP_STATUS_SEND_REQUEST, TX_DATA_OFFSET, txCapacity, txSlotHeader, type RxFrame,
} from '../../sys/tpacket.js';
import { type ChainScratch, MAX_FRAME_LEN, readFrame, type SplitQueue } from '../virtq/index.js';
import { fromPacket, packetRingBlock, packetRingNext, toPacket, toTap, type PacketRingBlock } from '../virtq/native.js';

/** Where a received frame goes: the switch (buf[off, off + len)). */
export type FrameSink = (buf: Uint8Array, off: number, len: number) => void;

export interface UplinkIo {
  /** The fd the event mode watches for received frames. */
  readonly fd: number;
  /** Queues the frame of a guest TX chain (after its hdrLen header); false: dropped (full, too big). */
  sendChain(chain: ChainScratch, hdrLen: number): boolean;
  /** Queues buf[off, off + len); false: dropped. */
  sendFlat(buf: Uint8Array, off: number, len: number): boolean;
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

/** The rings of packet socket `fd`, mapped into this thread (unmapped by close()). */
export function openPacketRingIo(fd: number, rings: PacketRings): PacketRingIo {
  const map: Mapping = mapShared(fd, ringsBytes(rings));
  return new PacketRingIo(fd, rings, map.buffer, () => kickTxRing(fd), () => unmap(map));
}

/**
 * The ring protocol over `mem` (the RX ring, then the TX ring, as the kernel
 * lays them out), with the kick and the unmapping given: unit tests run it
 * over plain memory playing the kernel's part.
 */
export class PacketRingIo implements UplinkIo {
  bad = 0;
  private readonly u8: Uint8Array;
  private readonly dv: DataView;
  private readonly i32: Int32Array;
  private readonly rxFrames: number;
  private readonly rxSize: number;
  private readonly txBase: number;
  private readonly txFrames: number;
  private readonly txSize: number;
  private readonly txMax: number;
  private rxNext = 0;
  private txNext = 0;
  private queued = 0;
  private readonly f: RxFrame = { off: 0, len: 0, vlanTci: -1, vlanTpid: 0 };
  private readonly tagged = new Uint8Array(MAX_FRAME_LEN);
  // The rings as the C fast path sees them (null without it).
  private readonly rxBlock: PacketRingBlock | null;
  private readonly txBlock: PacketRingBlock | null;

  constructor(readonly fd: number, rings: PacketRings, mem: ArrayBuffer, private readonly kick: () => boolean, private readonly release: () => void) {
    if (mem.byteLength < ringsBytes(rings)) throw new RangeError(`ring memory of ${mem.byteLength} bytes, ${ringsBytes(rings)} needed`);
    this.u8 = new Uint8Array(mem);
    this.dv = new DataView(mem);
    this.i32 = new Int32Array(mem);
    this.rxFrames = rings.rx.frameCount;
    this.rxSize = rings.rx.frameSize;
    this.txBase = rings.rx.blockSize * rings.rx.blockCount;
    this.txFrames = rings.tx.frameCount;
    this.txSize = rings.tx.frameSize;
    this.txMax = txCapacity(this.txSize);
    this.rxBlock = packetRingBlock(mem, 0, this.rxSize, this.rxFrames);
    this.txBlock = packetRingBlock(mem, this.txBase, this.txSize, this.txFrames);
  }

  fastSend(tx: SplitQueue, max: number, hdrLen: number, dst: number, src: number): number {
    const b = this.txBlock;
    if (b === null) return 0;
    const n = toPacket(tx, b, this.txNext, max, hdrLen, dst, src);
    this.txNext = packetRingNext(b);
    this.queued += n;
    return n;
  }

  fastReceive(rx: SplitQueue, max: number, hdrLen: number, dst: number, src: number): number {
    const b = this.rxBlock;
    if (b === null) return 0;
    const n = fromPacket(b, this.rxNext, rx, max, hdrLen, dst, src);
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

  private commit(slot: number, len: number): void {
    txSlotHeader(this.dv, slot, len);
    // Release: the frame and header are in place before the kernel may see the slot.
    Atomics.store(this.i32, slot >> 2, TP_STATUS_SEND_REQUEST);
    this.txNext = this.txNext + 1 === this.txFrames ? 0 : this.txNext + 1;
    this.queued++;
  }

  sendChain(chain: ChainScratch, hdrLen: number): boolean {
    const len = chain.readable - hdrLen;
    if (len < 0 || len > this.txMax) return false;
    const slot = this.txSlot();
    if (slot < 0) return false;
    if (readFrame(chain, hdrLen, this.u8, slot + TX_DATA_OFFSET) !== len) return false;
    this.commit(slot, len);
    return true;
  }

  sendFlat(buf: Uint8Array, off: number, len: number): boolean {
    if (!(len >= 0 && len <= this.txMax && off >= 0 && off + len <= buf.length)) return false;
    const slot = this.txSlot();
    if (slot < 0) return false;
    this.u8.set(buf.subarray(off, off + len), slot + TX_DATA_OFFSET);
    this.commit(slot, len);
    return true;
  }

  flush(): void {
    // A failed kick (ENOBUFS) leaves the slots marked: the next flush sends them.
    if (this.queued !== 0 && this.kick()) this.queued = 0;
  }

  receive(max: number, sink: FrameSink): number {
    const i32 = this.i32;
    const f = this.f;
    let n = 0;
    for (; n < max; n++) {
      const slot = this.rxNext * this.rxSize;
      // Acquire: the slot's header and frame are read only after its status.
      const status = Atomics.load(i32, slot >> 2);
      const r = rxSlot(this.dv, slot, this.rxSize, status, f);
      if (r !== RX_FRAME && r !== RX_BAD) break;
      if (r === RX_BAD) this.bad++;
      else if (f.vlanTci < 0) sink(this.u8, f.off, f.len);
      else {
        // The kernel took the tag off into the header: the guest gets it back in the frame.
        const len = reinsertVlan(this.u8, f, this.tagged);
        if (len < 0) this.bad++;
        else sink(this.tagged, 0, len);
      }
      // Release: done with the slot before the kernel may rewrite it.
      Atomics.store(i32, slot >> 2, TP_STATUS_KERNEL);
      this.rxNext = this.rxNext + 1 === this.rxFrames ? 0 : this.rxNext + 1;
    }
    return n;
  }

  close(): void {
    this.release();
  }
}

export class TapIo implements UplinkIo {
  readonly bad = 0;
  private readonly flat = Buffer.allocUnsafe(MAX_FRAME_LEN);
  private readonly inbuf = Buffer.allocUnsafe(MAX_FRAME_LEN);
  constructor(readonly fd: number) {}

  fastSend(tx: SplitQueue, max: number, hdrLen: number, dst: number, src: number): number {
    return toTap(tx, this.fd, max, hdrLen, dst, src);
  }

  // A tap has no ring to read from: each frame is one read() into our buffer.
  fastReceive(): number { return 0; }

  sendChain(chain: ChainScratch, hdrLen: number): boolean {
    const len = readFrame(chain, hdrLen, this.flat, 0);
    return len >= 0 && this.sendFlat(this.flat, 0, len);
  }

  sendFlat(buf: Uint8Array, off: number, len: number): boolean {
    // A full tap queue (EAGAIN) or a frame above the MTU (EINVAL/EMSGSIZE) drops it.
    const b = off === 0 ? buf : buf.subarray(off, off + len);
    return len > 0 && writeFd(this.fd, b, len) === len;
  }

  flush(): void {}

  receive(max: number, sink: FrameSink): number {
    let n = 0;
    for (; n < max; n++) {
      const len = readFd(this.fd, this.inbuf, this.inbuf.length);
      if (len <= 0) break; // EAGAIN: nothing queued
      sink(this.inbuf, 0, len);
    }
    return n;
  }

  close(): void {}
}
