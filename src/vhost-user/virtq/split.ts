// Device side of a virtio 1.x split virtqueue (spec 2.7) living in guest
// memory. The guest is hostile and runs concurrently on another CPU: every
// index and descriptor is read once into a local, validated, then used.

import { BROKEN_AVAIL_IDX, BROKEN_HEAD, CHAIN_OK, type ChainScratch } from './chain.js';
import type { DirtyLog } from './dirty-log.js';
import type { GuestMemory } from './memory.js';
import { walkChain } from './walk.js';

const USED_F_NO_NOTIFY = 1;
const AVAIL_F_NO_INTERRUPT = 1;
const EMPTY16 = new Uint16Array(0);
const EMPTY32 = new Uint32Array(0);

export interface QueueFeatures {
  /** VIRTIO_F_EVENT_IDX (bit 29) negotiated. */
  eventIdx: boolean;
  /** VIRTIO_F_INDIRECT_DESC (bit 28) negotiated. */
  indirectDesc: boolean;
}

/** Split rings: power of two, at most 32768 (spec 2.7). */
export function isValidQueueSize(n: number): boolean {
  return Number.isInteger(n) && n >= 1 && n <= 32768 && (n & (n - 1)) === 0;
}

export class SplitQueue {
  readonly size: number;
  readonly mask: number;
  readonly eventIdx: boolean;
  readonly indirectDesc: boolean;
  mem: GuestMemory | null = null;
  /** Rings translated and validated. */
  ready = false;
  /** Next avail ring position to consume (free-running u16). */
  lastAvail = 0;
  /** Next used ring position to fill (free-running u16). */
  lastUsed = 0;
  broken = false;
  brokenReason = 0;
  /** Chains rejected and returned with used len 0. */
  badChains = 0;
  lastBadReason = 0;
  /**
   * Live migration: the dirty log and the guest-physical address of the used
   * ring (SET_VRING_ADDR's log_guest_addr). Every write of ours to the used
   * ring is logged there; RX buffer writes through logChainWrites().
   */
  log: DirtyLog | null = null;
  logUsedGpa = -1;
  /**
   * Where the rings lie once ready: region and byte offset of the descriptor
   * table, avail ring and used ring (for the native fast path, native.ts),
   * and a count bumped whenever they may have moved.
   */
  readonly place = new Float64Array(6);
  layoutGen = 0;

  private descUA = -1;
  private availUA = -1;
  private usedUA = -1;
  private desc32: Uint32Array = EMPTY32;
  private descBase = 0; // u32 index of descriptor 0
  private avail16: Uint16Array = EMPTY16;
  private availFlags = 0; // u16 index of avail.flags; idx, ring[], used_event follow
  private used16: Uint16Array = EMPTY16;
  private usedFlags = 0; // u16 index of used.flags
  private used32: Uint32Array = EMPTY32;
  private usedRing = 0; // u32 index of used.ring[0]
  // Last avail.idx read from the guest: re-read (one Atomics.load) only when
  // everything seen so far is consumed, as DPDK and vhost-net do.
  private availCache = 0;
  private publishedUsed = 0;
  private signalledUsed = 0;
  /**
   * signalledUsed is what this queue really signalled. Not after a (re)start:
   * the previous back-end may have published used entries and died before
   * signalling them, leaving the guest waiting with used_event behind used.idx;
   * the EVENT_IDX test against such an event never fires again, and the ring
   * stalls for good. So the first decision after setBase() signals (as vhost-net
   * and DPDK do with their signalled_used_valid).
   */
  private signalledValid = false;

  constructor(size: number, features: QueueFeatures) {
    if (!isValidQueueSize(size)) throw new RangeError(`invalid split queue size ${size}`);
    this.size = size;
    this.mask = size - 1;
    this.eventIdx = features.eventIdx;
    this.indirectDesc = features.indirectDesc;
  }

  /**
   * SET_VRING_ADDR: front-end virtual addresses of the three rings. Returns
   * null, or why they were refused (then the queue is not ready). Clears a
   * previous broken state: this is the front-end re-initialising the ring.
   */
  setRings(mem: GuestMemory, descUA: number, availUA: number, usedUA: number): string | null {
    this.descUA = descUA;
    this.availUA = availUA;
    this.usedUA = usedUA;
    this.broken = false;
    this.brokenReason = 0;
    return this.setMemory(mem);
  }

  /** SET_MEM_TABLE replaced the memory: re-translate the ring addresses. */
  setMemory(mem: GuestMemory): string | null {
    this.mem = mem;
    this.ready = false;
    this.layoutGen++;
    this.desc32 = EMPTY32;
    this.avail16 = this.used16 = EMPTY16;
    this.used32 = EMPTY32;
    if (this.descUA < 0) return 'ring addresses not set';
    const n = this.size;
    // Spec 2.7 alignment and sizes: desc 16 * n (align 16), avail 6 + 2n
    // (align 2), used 6 + 8n (align 4). used_event/avail_event are included
    // whether or not EVENT_IDX is negotiated, as the spec's sizes do.
    const err = checkRing(this.descUA, 16, 'descriptor table') ??
      checkRing(this.availUA, 2, 'avail ring') ?? checkRing(this.usedUA, 4, 'used ring');
    if (err !== null) return err;
    const d = mem.translateUser(this.descUA, 16 * n);
    if (d < 0) return 'descriptor table not inside one memory region';
    const dr = mem.lastRegion;
    const a = mem.translateUser(this.availUA, 6 + 2 * n);
    if (a < 0) return 'avail ring not inside one memory region';
    const ar = mem.lastRegion;
    const u = mem.translateUser(this.usedUA, 6 + 8 * n);
    if (u < 0) return 'used ring not inside one memory region';
    const ur = mem.lastRegion;
    // Region views are 8-aligned in their buffers; a region whose start
    // address is oddly aligned would still misalign the rings in host memory.
    if (d % 4 !== 0 || a % 2 !== 0 || u % 4 !== 0) return 'ring misaligned in host memory';
    this.desc32 = mem.u32[dr]!;
    this.descBase = d / 4;
    this.avail16 = mem.u16[ar]!;
    this.availFlags = a / 2;
    this.used16 = mem.u16[ur]!;
    this.usedFlags = u / 2;
    this.used32 = mem.u32[ur]!;
    this.usedRing = u / 4 + 1;
    const pl = this.place;
    pl[0] = dr; pl[1] = d; pl[2] = ar; pl[3] = a; pl[4] = ur; pl[5] = u;
    this.ready = true;
    return null;
  }

  /**
   * SET_VRING_BASE: next avail index; nothing is in flight at that point, so
   * used starts there too (as DPDK and rust-vmm do). Clears broken.
   */
  setBase(idx: number): void {
    const v = idx & 0xffff;
    this.lastAvail = this.lastUsed = this.availCache = v;
    this.publishedUsed = this.signalledUsed = v;
    this.signalledValid = false;
    this.broken = false;
    this.brokenReason = 0;
  }

  /** GET_VRING_BASE reply. */
  getBase(): number {
    return this.lastAvail;
  }

  /**
   * After a back-end reconnect the guest's used.idx is the truth: chains we
   * had popped but not completed are lost with the old process, so resume
   * from there (lastAvail = lastUsed = used.idx).
   */
  resyncFromUsed(): void {
    if (!this.ready) return;
    const u = Atomics.load(this.used16, this.usedFlags + 1);
    this.setBase(u);
  }

  /** Entries the guest has made available and we have not consumed yet. */
  availCount(): number {
    if (!this.ready || this.broken) return 0;
    const n = (Atomics.load(this.avail16, this.availFlags + 1) - this.lastAvail) & 0xffff;
    return n > this.size ? 0 : n;
  }

  /**
   * Pops the next valid chain into `out`: returns its head index, -1 when
   * nothing is available, -2 when the queue is broken (or not ready: -1).
   * Bad chains met on the way are returned as used with len 0 (call
   * flushUsed() at the end of every batch, whatever this returned).
   */
  popChain(out: ChainScratch): number {
    if (!this.ready) return -1;
    if (this.broken) return -2;
    for (;;) {
      if (this.lastAvail === this.availCache) {
        // Acquire: ring entries are read only after this load.
        const idx = Atomics.load(this.avail16, this.availFlags + 1);
        const n = (idx - this.lastAvail) & 0xffff;
        if (n === 0) return -1;
        // The guest can never have more than `size` chains outstanding; a
        // larger jump is corruption, and trusting it would make us consume
        // stale ring slots over and over.
        if (n > this.size) return this.markBroken(BROKEN_AVAIL_IDX);
        this.availCache = idx;
      }
      const head = this.avail16[this.availFlags + 2 + (this.lastAvail & this.mask)]!;
      // There is no valid id to return in the used ring for this slot; the
      // ring itself is garbage (QEMU also stops the device here).
      if (head >= this.size) return this.markBroken(BROKEN_HEAD);
      this.lastAvail = (this.lastAvail + 1) & 0xffff;
      const r = walkChain(this.mem!, this.desc32, this.descBase, this.size, this.indirectDesc, head, out);
      if (r === CHAIN_OK) return head;
      this.discard(head, r);
    }
  }

  /** Positions out to the native fast path's ring block (u32 words at `i`). */
  savePositions(st: Uint32Array, i: number): void {
    st[i] = this.lastAvail;
    st[i + 1] = this.lastUsed;
    st[i + 2] = this.availCache;
  }

  /** Positions back from the native fast path (it consumed and completed chains). */
  loadPositions(st: Uint32Array, i: number): void {
    this.lastAvail = st[i]!;
    this.lastUsed = st[i + 1]!;
    this.availCache = st[i + 2]!;
  }

  /** Undo the last successful popChain (before its pushUsed). */
  unpop(): void {
    this.lastAvail = (this.lastAvail - 1) & 0xffff;
  }

  /** Give a chain back as used with len 0, counted as bad with `reason`. */
  discard(head: number, reason: number): void {
    this.badChains++;
    this.lastBadReason = reason;
    this.pushUsed(head, 0);
  }

  /**
   * Roll back to marks taken before a multi-chain operation. If no bad chain
   * was consumed meanwhile, this un-pops everything; otherwise rewinding
   * lastAvail would replay (and double-complete) the bad chain, so the chains
   * stay consumed and their pending used entries are rewritten to len 0.
   */
  rewind(availMark: number, usedMark: number, badMark: number): void {
    if (this.badChains === badMark) {
      this.lastAvail = availMark;
      this.lastUsed = usedMark;
      return;
    }
    for (let i = usedMark; i !== this.lastUsed; i = (i + 1) & 0xffff) {
      this.used32[this.usedRing + ((i & this.mask) << 1) + 1] = 0;
    }
  }

  /** Writes a used entry without publishing it. */
  pushUsed(head: number, len: number): void {
    if (!this.ready) return;
    const slot = this.lastUsed & this.mask;
    const p = this.usedRing + (slot << 1);
    this.used32[p] = head;
    this.used32[p + 1] = len;
    if (this.log !== null) this.log.mark(this.logUsedGpa + 4 + 8 * slot, 8);
    this.lastUsed = (this.lastUsed + 1) & 0xffff;
  }

  /** Logs the first `written` device-writable bytes of a popped chain (an RX buffer we filled). */
  logChainWrites(chain: ChainScratch, written: number): void {
    const log = this.log;
    const mem = chain.mem;
    if (log === null || mem === null) return;
    for (let i = chain.firstWritable; i < chain.count && written > 0; i++) {
      const len = Math.min(chain.length[i]!, written);
      log.mark(mem.regionGpaStart(chain.region[i]!) + chain.offset[i]!, len);
      written -= len;
    }
  }

  /** Publishes used.idx (release: after the entries). Returns entries published. */
  flushUsed(): number {
    const n = (this.lastUsed - this.publishedUsed) & 0xffff;
    if (n !== 0 && this.ready) {
      Atomics.store(this.used16, this.usedFlags + 1, this.lastUsed);
      this.publishedUsed = this.lastUsed;
      if (this.log !== null) this.log.mark(this.logUsedGpa + 2, 2);
    }
    return n;
  }

  /**
   * Whether to signal the call fd for what was published since the previous
   * call (spec 2.7.10). Call once after each flushUsed() that published.
   */
  needsNotify(): boolean {
    if (!this.ready) return false;
    const now = this.publishedUsed;
    const old = this.signalledUsed;
    this.signalledUsed = now;
    if (now === old) return false;
    if (this.eventIdx) {
      if (!this.signalledValid) {
        this.signalledValid = true;
        return true;
      }
      // Seq-cst load after the seq-cst store of used.idx: the full barrier the
      // spec needs so we cannot miss a used_event update.
      const ev = Atomics.load(this.avail16, this.availFlags + 2 + this.size);
      return ((now - ev - 1) & 0xffff) < ((now - old) & 0xffff);
    }
    return (Atomics.load(this.avail16, this.availFlags) & AVAIL_F_NO_INTERRUPT) === 0;
  }

  /**
   * Ask the guest to kick us again (event-driven mode). Returns true if
   * buffers are already available: the caller must process them rather than
   * sleep, or a kick sent before we re-enabled would be lost.
   */
  enableNotify(): boolean {
    if (!this.ready || this.broken) return false;
    if (this.eventIdx) {
      Atomics.store(this.used16, this.usedFlags + 2 + 4 * this.size, this.lastAvail);
      if (this.log !== null) this.log.mark(this.logUsedGpa + 4 + 8 * this.size, 2);
    } else {
      Atomics.store(this.used16, this.usedFlags, 0);
      if (this.log !== null) this.log.mark(this.logUsedGpa, 2);
    }
    return Atomics.load(this.avail16, this.availFlags + 1) !== this.lastAvail;
  }

  /**
   * Polling mode: tell the guest not to kick. With EVENT_IDX the driver
   * ignores used.flags (spec 2.7.10), so we just stop advancing avail_event.
   */
  disableNotify(): void {
    if (!this.ready || this.eventIdx) return;
    Atomics.store(this.used16, this.usedFlags, USED_F_NO_NOTIFY);
    if (this.log !== null) this.log.mark(this.logUsedGpa, 2);
  }

  private markBroken(reason: number): number {
    this.broken = true;
    this.brokenReason = reason;
    return -2;
  }
}

function checkRing(ua: number, align: number, what: string): string | null {
  if (!Number.isSafeInteger(ua) || ua < 0) return `${what} address invalid`;
  if (ua % align !== 0) return `${what} not ${align}-byte aligned`;
  return null;
}
