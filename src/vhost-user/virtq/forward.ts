// Guest-to-guest forwarding: frames go from one guest's TX queue straight
// into another guest's RX buffers, copied between the two mappings with no
// intermediate buffer. Used indices are published once per batch on each
// side; the caller then asks each queue needsNotify() and signals once.

import { ChainScratch, DEFAULT_CHAIN_CAPACITY } from './chain.js';
import { deliverFrame, MAX_FRAME_LEN, RX_NO_BUFFERS, RX_OK, RX_TOO_BIG } from './net.js';
import type { SplitQueue } from './split.js';

export interface ForwarderOptions {
  /** Net header length on the sending guest (netHeaderLen()). */
  txHdrLen: number;
  /** Net header length on the receiving guest. */
  rxHdrLen: number;
  /** MRG_RXBUF negotiated by the receiving guest. */
  rxMrgRxbuf: boolean;
  /**
   * When the receiver has no buffers: false (default) leaves the frame in
   * the sender's TX ring and stops (back-pressure: lossless, the sender
   * waits for the receiver); true drops it, like a NIC with a full RX ring.
   */
  dropWhenRxFull?: boolean;
  chainCapacity?: number;
}

export class Forwarder {
  readonly tx: SplitQueue;
  readonly rx: SplitQueue;
  readonly txChain: ChainScratch;
  readonly rxChain: ChainScratch;
  private readonly txHdr: number;
  private readonly rxHdr: number;
  private readonly rxMrg: boolean;
  private readonly dropWhenFull: boolean;

  // Cumulative counters.
  frames = 0;
  bytes = 0;
  /** TX chains shorter than a header or with a frame > MAX_FRAME_LEN. */
  txMalformed = 0;
  /** Frames dropped: no MRG_RXBUF and the receiver's next buffer too small. */
  rxTooBig = 0;
  /** Frames dropped because the receiver had no buffers (dropWhenRxFull). */
  rxFullDrops = 0;

  // Results of the last forward() call.
  /** Used entries published on the TX / RX queue by the last call. */
  txPublished = 0;
  rxPublished = 0;
  /**
   * The last call stopped because the receiver had no buffers (or its queue
   * is broken) while the sender still had frames: wait for an RX kick
   * (rx.enableNotify()) before calling again.
   */
  rxStalled = false;

  constructor(tx: SplitQueue, rx: SplitQueue, opts: ForwarderOptions) {
    for (const h of [opts.txHdrLen, opts.rxHdrLen]) {
      if (h !== 10 && h !== 12) throw new RangeError(`net header length ${h} not 10 or 12`);
    }
    this.tx = tx;
    this.rx = rx;
    this.txHdr = opts.txHdrLen;
    this.rxHdr = opts.rxHdrLen;
    this.rxMrg = opts.rxMrgRxbuf;
    this.dropWhenFull = opts.dropWhenRxFull ?? false;
    const cap = opts.chainCapacity ?? DEFAULT_CHAIN_CAPACITY;
    this.txChain = new ChainScratch(cap);
    this.rxChain = new ChainScratch(cap);
  }

  /**
   * Moves up to maxFrames TX chains (delivered or dropped); returns frames
   * delivered. Publishes both used rings once at the end.
   */
  forward(maxFrames: number): number {
    const tx = this.tx;
    const rx = this.rx;
    const tc = this.txChain;
    const rc = this.rxChain;
    const txHdr = this.txHdr;
    let delivered = 0;
    let bytes = 0;
    let stalled = false;
    for (let i = 0; i < maxFrames; i++) {
      const head = tx.popChain(tc);
      if (head < 0) break;
      const frameLen = tc.readable - txHdr;
      if (frameLen < 0 || frameLen > MAX_FRAME_LEN) {
        // Well-formed as a chain, malformed as a packet: complete it so the
        // sender gets its buffer back, and drop.
        tx.pushUsed(head, 0);
        this.txMalformed++;
        continue;
      }
      const r = deliverFrame(rx, rc, this.rxHdr, this.rxMrg, tc, txHdr, null, 0, frameLen);
      if (r === RX_OK) {
        // TX buffers are device-readable only: nothing written, used len 0.
        tx.pushUsed(head, 0);
        delivered++;
        bytes += frameLen;
      } else if (r === RX_TOO_BIG) {
        tx.pushUsed(head, 0);
        this.rxTooBig++;
      } else if (this.dropWhenFull) {
        tx.pushUsed(head, 0);
        if (r === RX_NO_BUFFERS) this.rxFullDrops++;
      } else {
        tx.unpop();
        stalled = true;
        break;
      }
    }
    this.frames += delivered;
    this.bytes += bytes;
    this.rxStalled = stalled;
    this.txPublished = tx.flushUsed();
    this.rxPublished = rx.flushUsed();
    return delivered;
  }
}
