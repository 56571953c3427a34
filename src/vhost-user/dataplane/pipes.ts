// The data path's unit of work: a pipe moves frames from one source to one
// destination (guest TX ring -> other guest's RX ring, guest -> tap, tap ->
// guest, guest -> nowhere). `run` does a bounded batch and reports whether it
// did anything; the worker loop decides when to call it (spinning or on kicks).
import { c } from '../../sys/libc.js';
import { eventfdSignal } from '../../sys/eventfd.js';
import { ChainScratch, Forwarder, MAX_FRAME_LEN, readFrame, RX_NO_BUFFERS, RX_OK, writeFrame } from '../virtq/index.js';
import type { WorkerPort, WorkerQueue } from './port.js';

export const BATCH = 64;

export interface Pipe {
  /** Moves up to BATCH frames; returns how many it handled (0: idle or stalled). */
  run(): number;
  /** Waiting for the destination to post buffers (its kick wakes us). */
  readonly stalled: boolean;
  /** The tap fd this pipe reads, if any (event mode watches it). */
  readonly readFd: number;
}

function notify(wq: WorkerQueue, published: number): void {
  if (published !== 0 && wq.q.needsNotify() && wq.callFd >= 0) eventfdSignal(wq.callFd);
}

/** Guest TX ring straight into another guest's RX ring (the VM-to-VM patch). */
export class RingToRing implements Pipe {
  private readonly f: Forwarder;
  readonly readFd = -1;
  // When the receiver's ring breaks (or is disabled) after this pipe was built,
  // frames are dropped like for an absent peer, never left to stall the sender.
  private readonly drop: RingToDrop;
  constructor(private readonly from: WorkerPort, private readonly tx: WorkerQueue, private readonly to: WorkerPort, private readonly rx: WorkerQueue) {
    this.f = new Forwarder(tx.q, rx.q, { txHdrLen: tx.spec.hdrLen, rxHdrLen: rx.spec.hdrLen, rxMrgRxbuf: rx.spec.mrgRxbuf });
    this.drop = new RingToDrop(from, tx, false);
  }
  get stalled(): boolean { return this.f.rxStalled; }
  run(): number {
    if (this.rx.q.broken || !this.rx.enabled) return this.drop.run();
    const f = this.f;
    const before = f.txMalformed + f.rxTooBig;
    const n = f.forward(BATCH);
    notify(this.tx, f.txPublished);
    notify(this.rx, f.rxPublished);
    this.from.stats.txFrames += n;
    this.to.stats.rxFrames += n;
    const dropped = f.txMalformed + f.rxTooBig - before;
    this.from.stats.txDropped += dropped;
    return n + dropped;
  }
}

/** Guest TX ring to nothing: a disabled ring, an absent peer, a sink port. */
export class RingToDrop implements Pipe {
  private readonly chain = new ChainScratch();
  readonly stalled = false;
  readonly readFd = -1;
  constructor(private readonly port: WorkerPort, private readonly tx: WorkerQueue, private readonly countAsTx: boolean) {}
  run(): number {
    const q = this.tx.q;
    let n = 0;
    for (; n < BATCH; n++) {
      const head = q.popChain(this.chain);
      if (head < 0) break;
      q.pushUsed(head, 0);
    }
    notify(this.tx, q.flushUsed());
    if (this.countAsTx) this.port.stats.txFrames += n;
    else this.port.stats.txDropped += n;
    return n;
  }
}

/** Guest TX ring to a tap (no vnet header on the tap: offloads are never negotiated). */
export class RingToTap implements Pipe {
  private readonly chain = new ChainScratch();
  private readonly buf = Buffer.allocUnsafe(MAX_FRAME_LEN);
  readonly stalled = false;
  readonly readFd = -1;
  constructor(private readonly port: WorkerPort, private readonly tx: WorkerQueue, private readonly tapFd: number) {}
  run(): number {
    const q = this.tx.q;
    const hdr = this.tx.spec.hdrLen;
    let n = 0;
    for (; n < BATCH; n++) {
      const head = q.popChain(this.chain);
      if (head < 0) break;
      const len = readFrame(this.chain, hdr, this.buf, 0);
      q.pushUsed(head, 0);
      // A full tap queue (EAGAIN) drops the frame, as a NIC would.
      if (len > 0 && Number(c.write(this.tapFd, this.buf, len)) === len) this.port.stats.txFrames++;
      else this.port.stats.txDropped++;
    }
    notify(this.tx, q.flushUsed());
    return n;
  }
}

/** Tap to the guest's RX ring. Stops reading (stalls) while the guest has no buffers. */
export class TapToRing implements Pipe {
  private readonly chain = new ChainScratch();
  private readonly buf = Buffer.allocUnsafe(MAX_FRAME_LEN);
  private pending = 0;
  stalled = false;
  constructor(private readonly port: WorkerPort, private readonly rx: WorkerQueue, private readonly tapFd: number) {}
  get readFd(): number { return this.tapFd; }
  run(): number {
    const q = this.rx.q;
    const spec = this.rx.spec;
    let n = 0;
    this.stalled = false;
    for (; n < BATCH; n++) {
      let len = this.pending;
      if (len === 0) {
        len = Number(c.read(this.tapFd, this.buf, this.buf.length));
        if (len <= 0) break; // EAGAIN: nothing queued
      }
      const r = writeFrame(q, this.chain, this.buf, 0, len, spec.hdrLen, spec.mrgRxbuf);
      if (r === RX_OK) {
        this.pending = 0;
        this.port.stats.rxFrames++;
      } else if (r === RX_NO_BUFFERS) {
        // Keep the frame for when the guest posts buffers.
        this.pending = len;
        this.stalled = true;
        break;
      } else {
        this.pending = 0;
        this.port.stats.rxDropped++;
      }
    }
    notify(this.rx, q.flushUsed());
    return n;
  }
}
