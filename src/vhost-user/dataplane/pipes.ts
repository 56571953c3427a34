// The data path's unit of work: a pipe moves frames from one source into the
// switch (a guest's TX ring, the uplink fd) or to nowhere (a disabled ring).
// `run` does a bounded batch and reports whether it did anything; the worker
// loop decides when to call it (spinning or on kicks).
import { ChainScratch } from '../virtq/index.js';
import { UPLINK } from '../switch/fdb.js';
import { BACKPRESSURE, notify, type SwitchCore } from './switch-core.js';
import type { WorkerPort, WorkerQueue } from './port.js';
import type { FrameSink, UplinkIo } from './uplink-io.js';

export const BATCH = 64;

export interface Pipe {
  /** Moves up to BATCH frames; returns how many it handled (0: idle or stalled). */
  run(): number;
  /** Waiting for a destination to post buffers (its kick wakes us). */
  readonly stalled: boolean;
  /** The fd this pipe reads, if any (event mode watches it). */
  readonly readFd: number;
}

/** A guest's TX ring into the switch. */
export class GuestTxPipe implements Pipe {
  private readonly chain = new ChainScratch();
  readonly readFd = -1;
  stalled = false;
  private readonly pair: number;
  constructor(private readonly sw: SwitchCore, private readonly port: WorkerPort, private readonly tx: WorkerQueue) {
    this.pair = tx.index >> 1;
  }
  run(): number {
    const q = this.tx.q;
    const hdr = this.tx.spec.hdrLen;
    const sw = this.sw;
    let n = 0;
    this.stalled = false;
    for (; n < BATCH; n++) {
      // Runs of frames the switch has already decided go natively; the
      // frame that ends a run (new MACs, a chained buffer, a full receiver)
      // comes here and decides the next run.
      n += sw.fastForward(this.port, this.pair, this.tx, BATCH - n);
      if (n === BATCH) break;
      const head = q.popChain(this.chain);
      if (head < 0) break;
      if (sw.fromGuest(this.port, this.pair, this.chain, hdr) === BACKPRESSURE) {
        q.unpop();
        this.stalled = true;
        break;
      }
      // TX buffers are device-readable only: nothing written, used len 0.
      q.pushUsed(head, 0);
    }
    notify(this.tx, q.flushUsed());
    sw.flush();
    return n;
  }
}

/** Guest TX ring to nothing: a disabled ring. */
export class RingToDrop implements Pipe {
  private readonly chain = new ChainScratch();
  readonly stalled = false;
  readonly readFd = -1;
  constructor(private readonly port: WorkerPort, private readonly tx: WorkerQueue) {}
  run(): number {
    const q = this.tx.q;
    let n = 0;
    for (; n < BATCH; n++) {
      const head = q.popChain(this.chain);
      if (head < 0) break;
      q.pushUsed(head, 0);
    }
    notify(this.tx, q.flushUsed());
    this.port.stats.txDropped += n;
    return n;
  }
}

/**
 * The uplink (a tap or an AF_PACKET socket's RX ring) into the switch. It
 * never stalls: a frame for a guest without RX buffers is dropped, so one
 * slow guest cannot hold up the others.
 */
export class UplinkRxPipe implements Pipe {
  readonly stalled = false;
  readonly readFd: number;
  private readonly sink: FrameSink;
  constructor(private readonly sw: SwitchCore, private readonly io: UplinkIo) {
    this.readFd = io.fd;
    this.sink = (buf, off, len, hdr) => {
      sw.uplinkStats.rxFrames++;
      sw.fromFlat(UPLINK, buf, off, len, hdr);
    };
  }
  run(): number {
    const sw = this.sw;
    const bad = this.io.bad;
    let n = 0;
    while (n < BATCH) {
      // Runs of frames for the decision already taken go natively; the
      // frame that ends a run comes here and decides the next one.
      n += sw.fastFromUplink(BATCH - n);
      if (n === BATCH) break;
      const k = this.io.receive(1, this.sink);
      if (k === 0) break;
      n += k;
    }
    if (this.io.bad !== bad) sw.uplinkStats.rxDropped += this.io.bad - bad;
    sw.flush();
    return n;
  }
}
