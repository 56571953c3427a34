// One split ring driven from the guest side over GuestMemfd (the test
// front-end's rings): posting RX buffers, queueing TX frames, reading used.
import { closeFd } from '../../src/sys/libc.js';
import { eventfdDrain, eventfdSignal } from '../../src/sys/eventfd.js';
import type * as F from './frontend-codec.js';
import { eventfdAdd, makeEventfd } from './frontend-syscalls.js';
import type { GuestMemfd } from './guest-memory.js';
import { MockVirtq, VIRTQ_DESC_F_WRITE, type MockGuest } from './mock-driver.js';

export const NET_HDR = 12;
export const BUF_SIZE = 2048;

/** Where things live in guest memory (offsets from gpaBase). */
export const LAYOUT = {
  /** Ring i's descriptor table; avail and used follow (MockVirtq.at). */
  ring: (i: number): number => i * 0x10000,
  /** Ring i's packet buffers (BUF_SIZE each, one per descriptor id). */
  buffers: (i: number, size: number): number => (1 << 20) + i * size * BUF_SIZE,
  /** Free for hostile tests (indirect tables, odd buffers): [2 MiB, end). */
  scratch: 2 << 20,
} as const;

/**
 * One split ring driven from the guest side. Chains use descriptor id k with
 * buffer k (so no allocation map is needed); raw access to the MockVirtq lets
 * hostile tests write anything.
 */
export class GuestRing {
  readonly q: MockVirtq;
  readonly kickFd: number;
  readonly callFd: number;
  private readonly free: number[] = [];
  /** Descriptor ids currently owned by the device. */
  readonly outstanding = new Set<number>();

  constructor(readonly g: GuestMemfd, readonly index: number, readonly size: number) {
    // MockVirtq only touches buffer/dv/host/uaOf, which GuestMemfd provides
    // over the shared mapping (MockGuest's private fields make the cast needed).
    this.q = MockVirtq.at(g as unknown as MockGuest, size, g.gpaBase + LAYOUT.ring(index));
    for (let i = size - 1; i >= 0; i--) this.free.push(i);
    this.kickFd = makeEventfd();
    this.callFd = makeEventfd();
  }

  get isRx(): boolean { return (this.index & 1) === 0; }

  /** Withdraws n descriptor ids from this ring's allocator, for chains a test builds by hand. */
  take(n: number): number[] {
    if (n > this.free.length) throw new Error(`ring ${this.index}: only ${this.free.length} free descriptors`);
    return this.free.splice(this.free.length - n, n).reverse();
  }
  bufGpa(id: number): number { return this.g.gpaBase + LAYOUT.buffers(this.index, this.size) + id * BUF_SIZE; }
  get freeCount(): number { return this.free.length; }

  addr(): F.VringAddr {
    return { index: this.index, desc: BigInt(this.q.descUA), used: BigInt(this.q.usedUA), avail: BigInt(this.q.availUA) };
  }

  kick(): void { eventfdSignal(this.kickFd); }
  /** Kicks the back-end has not consumed yet (peeks: read, then write back). */
  kickPending(): number {
    const n = eventfdDrain(this.kickFd);
    if (n) eventfdAdd(this.kickFd, BigInt(n));
    return n;
  }
  /** Calls (interrupts) the back-end signalled since the last look. */
  calls(): number { return eventfdDrain(this.callFd); }

  /** RX: posts up to n device-writable buffers (default: every free one). */
  postRx(n = this.free.length): number {
    let k = 0;
    for (; k < n && this.free.length; k++) {
      const id = this.free.pop()!;
      this.q.setDesc(id, this.bufGpa(id), BUF_SIZE, VIRTQ_DESC_F_WRITE, 0);
      this.outstanding.add(id);
      this.q.publish(id);
    }
    if (k) this.kick();
    return k;
  }

  /** TX: queues frames (a zero net header in front of each); returns how many fit. */
  sendFrames(frames: readonly Uint8Array[]): number {
    this.reclaim();
    let k = 0;
    for (; k < frames.length && this.free.length; k++) {
      const f = frames[k]!;
      if (f.length + NET_HDR > BUF_SIZE) throw new RangeError(`frame of ${f.length} bytes does not fit a ${BUF_SIZE}-byte buffer`);
      const id = this.free.pop()!;
      const gpa = this.bufGpa(id);
      this.g.u8.fill(0, this.g.host(gpa), this.g.host(gpa) + NET_HDR);
      this.g.write(gpa + NET_HDR, f);
      this.q.setDesc(id, gpa, NET_HDR + f.length, 0, 0);
      this.outstanding.add(id);
      this.q.publish(id);
    }
    if (k) this.kick();
    return k;
  }

  /** Publishes an arbitrary head (hostile tests build the descriptors themselves). */
  publishRaw(head: number, kick = true): void {
    this.q.publish(head);
    if (kick) this.kick();
  }

  /** Reads new used entries; ids this ring handed out return to the free list. */
  takeUsed(): { id: number; len: number }[] {
    const used = this.q.takeUsed();
    for (const u of used) {
      if (this.outstanding.delete(u.id)) this.free.push(u.id);
    }
    return used;
  }

  /** TX: completions since the last call. */
  reclaim(): number {
    return this.takeUsed().length;
  }

  /** A frame spread over several buffers (MRG_RXBUF) whose later buffers are still to come. */
  private partial: { parts: Uint8Array[]; left: number } | null = null;

  /**
   * RX: frames delivered since the last call (net header stripped). A used
   * entry with len 0 is a buffer the back-end rejected: returned as null.
   * With MRG_RXBUF a frame larger than one buffer spans `num_buffers` used
   * entries (only the first has the header); they are joined.
   */
  takeRx(): (Uint8Array | null)[] {
    const out: (Uint8Array | null)[] = [];
    for (const u of this.takeUsed()) {
      if (u.len === 0 && !this.partial) { out.push(null); continue; }
      if (u.id >= this.size || u.len > BUF_SIZE) throw new Error(`ring ${this.index}: used entry ${JSON.stringify(u)} is impossible for the buffers posted`);
      const gpa = this.bufGpa(u.id);
      if (this.partial) {
        this.partial.parts.push(this.g.read(gpa, u.len));
        if (--this.partial.left === 0) {
          out.push(Buffer.concat(this.partial.parts));
          this.partial = null;
        }
        continue;
      }
      if (u.len < NET_HDR) throw new Error(`ring ${this.index}: used entry ${JSON.stringify(u)} shorter than the net header`);
      const numBuffers = this.g.dv.getUint16(this.g.host(gpa + 10, 2), true);
      if (numBuffers === 0) throw new Error(`ring ${this.index}: num_buffers 0`);
      const first = this.g.read(gpa + NET_HDR, u.len - NET_HDR);
      if (numBuffers === 1) out.push(first);
      else this.partial = { parts: [first], left: numBuffers - 1 };
    }
    return out;
  }

  /** The used index the back-end published. */
  usedIdx(): number { return this.q.usedIdx(); }

  close(): void {
    closeFd(this.kickFd);
    closeFd(this.callFd);
  }
}
