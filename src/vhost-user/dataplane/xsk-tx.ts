// The producer side of an AF_XDP socket's TX ring (sys/xsk.ts opens it), for
// the uplink's plain frames. UMEM frame i belongs to TX ring entry i: entry
// `prod` is written into frame `prod & mask`, and that frame is free again
// once the kernel has completed as many frames as were sent before it (it
// completes them in order; the addresses on the completion ring are not
// needed, only their count). So the free-running TX producer and completion
// consumer, both ours and both in the shared ring memory, are the whole
// state, which the C fast path (virtq/native.ts toXsk) reads and advances in
// the same places. Ring memory is shared with the kernel alone; what it
// writes there (its producer and consumer indexes) is still checked before
// use, so a count that makes no sense cannot send us past our frames.
import { type ChainScratch, readFrame } from '../virtq/index.js';
import { XDP_DESC_LEN, type XskRingOffsets } from '../../sys/xsk.js';
import { xskRingBlock, type XskRingBlock } from '../virtq/native.js';

const EAGAIN = 11;

export interface XskTxGeometry { frames: number; frameSize: number; tx: XskRingOffsets; cq: XskRingOffsets }

export class XskTx {
  /** The largest frame put() takes: a UMEM frame, or the uplink's slot size if smaller. */
  readonly maxLen: number;
  private readonly mask: number;
  private readonly umem: Uint8Array;
  private readonly txIdx: Uint32Array;
  private readonly txDesc: DataView;
  private readonly txDescBase: number;
  private readonly cqIdx: Uint32Array;
  private readonly txProd: number;
  private readonly txCons: number;
  private readonly cqProd: number;
  private readonly cqCons: number;
  /** The block the C fast path drives this ring through (null without it). */
  readonly block: XskRingBlock | null;

  /**
   * `kick` asks the kernel to send (sys/xsk.ts kickXsk: 0 or an errno).
   * `maxLen`: the largest frame the uplink device takes.
   */
  constructor(private readonly g: XskTxGeometry, umem: ArrayBuffer, tx: ArrayBuffer, cq: ArrayBuffer, private readonly kick: () => number, maxLen: number) {
    if (umem.byteLength < g.frames * g.frameSize) throw new RangeError('UMEM smaller than its frames');
    if (tx.byteLength < g.tx.desc + g.frames * XDP_DESC_LEN || cq.byteLength < g.cq.desc + g.frames * 8) throw new RangeError('AF_XDP ring mapping too small');
    for (const o of [g.tx.producer, g.tx.consumer, g.cq.producer, g.cq.consumer]) if (o % 4 !== 0) throw new RangeError('AF_XDP ring index not 4-aligned');
    this.mask = g.frames - 1;
    this.maxLen = Math.min(g.frameSize, maxLen);
    this.umem = new Uint8Array(umem);
    this.txIdx = new Uint32Array(tx);
    this.txDesc = new DataView(tx);
    this.txDescBase = g.tx.desc;
    this.cqIdx = new Uint32Array(cq);
    this.txProd = g.tx.producer >> 2;
    this.txCons = g.tx.consumer >> 2;
    this.cqProd = g.cq.producer >> 2;
    this.cqCons = g.cq.consumer >> 2;
    this.block = xskRingBlock(tx, g.tx.producer, g.tx.desc, cq, g.cq.producer, g.cq.consumer, umem, g.frames, g.frameSize, this.maxLen);
  }

  /** Frames handed to the ring and not yet completed by the kernel. */
  inFlight(): number {
    return (this.txIdx[this.txProd]! - this.cqIdx[this.cqCons]!) >>> 0;
  }

  /** Takes the kernel's completions (counted, not read) so their frames can be reused; returns the free frames. */
  private reclaim(): number {
    const prod = this.txIdx[this.txProd]!;
    const done = this.cqIdx[this.cqCons]!;
    // Acquire: the kernel is done with the frames it counts here.
    const completed = Atomics.load(this.cqIdx, this.cqProd);
    // More completions than frames in flight cannot happen; such a count is ignored.
    if (((completed - done) >>> 0) <= ((prod - done) >>> 0) && completed !== done) {
      Atomics.store(this.cqIdx, this.cqCons, completed);
    }
    return this.g.frames - this.inFlight();
  }

  /** The byte offset of the next free UMEM frame, or -1 when every frame is in flight. */
  private nextFrame(): number {
    if (this.inFlight() >= this.g.frames && this.reclaim() === 0) return -1;
    return (this.txIdx[this.txProd]! & this.mask) * this.g.frameSize;
  }

  /** Publishes the frame just written into the next entry's UMEM frame. */
  private commit(len: number): void {
    const prod = this.txIdx[this.txProd]!;
    const at = this.txDescBase + (prod & this.mask) * XDP_DESC_LEN;
    this.txDesc.setBigUint64(at, BigInt((prod & this.mask) * this.g.frameSize), true);
    this.txDesc.setUint32(at + 8, len, true);
    this.txDesc.setUint32(at + 12, 0, true);
    // Release: the frame and its descriptor are in place before the kernel sees the entry.
    Atomics.store(this.txIdx, this.txProd, (prod + 1) >>> 0);
  }

  /** Queues buf[off, off + len); false: too big, or every frame in flight (the caller drops and counts). */
  put(buf: Uint8Array, off: number, len: number): boolean {
    if (!(len >= 14 && len <= this.maxLen && off >= 0 && off + len <= buf.length)) return false;
    const at = this.nextFrame();
    if (at < 0) return false;
    this.umem.set(buf.subarray(off, off + len), at);
    this.commit(len);
    return true;
  }

  /** Queues the frame of a guest TX chain (after its hdrLen header); false as put(). */
  putChain(chain: ChainScratch, hdrLen: number): boolean {
    const len = chain.readable - hdrLen;
    if (!(len >= 14 && len <= this.maxLen)) return false;
    const at = this.nextFrame();
    if (at < 0) return false;
    if (readFrame(chain, hdrLen, this.umem.subarray(at, at + this.g.frameSize), 0) !== len) return false;
    this.commit(len);
    return true;
  }

  /** Entries the kernel has not taken off the TX ring yet. */
  unsent(): number {
    return (this.txIdx[this.txProd]! - Atomics.load(this.txIdx, this.txCons)) >>> 0;
  }

  /**
   * Has the kernel send what the ring holds. Each kick sends a batch there
   * and then (copy mode: 32 frames in Linux 6.x; EAGAIN: more is left), so
   * kick while every kick makes progress; whatever the device refused (EBUSY,
   * ENOBUFS, or two kicks in a row that sent nothing) stays queued for the
   * next flush.
   */
  flush(): void {
    let left = this.unsent();
    let stalls = 0;
    // At most a kick per entry: the ring's indexes are read, not trusted.
    for (let i = 0; left !== 0 && i <= this.g.frames; i++) {
      const err = this.kick();
      if (err !== 0 && err !== EAGAIN) break;
      const now = this.unsent();
      // Each round either sends something (left only shrinks) or counts a stall.
      if (now < left) stalls = 0;
      else if (++stalls === 2) break;
      left = now;
    }
    this.reclaim();
  }
}
