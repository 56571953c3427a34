// Test support (as rust-vmm's virtio-queue `mock`): a simulated guest with
// its memory laid out in one ArrayBuffer, regions separated by guard bytes,
// and a virtio driver for one split queue. Used by unit tests and benches;
// never imported by the data path. Helpers here may throw (test code).

import { GuestMemory, type MemoryRegion } from '../../src/vhost-user/virtq/memory.js';

export interface MockRegionSpec {
  gpa: number;
  size: number;
  ua: number;
}

export interface MockGuestOptions {
  guard?: number; // guard bytes before, between and after regions
  guardByte?: number;
  shared?: boolean; // SharedArrayBuffer (default) or ArrayBuffer
}

export class MockGuest {
  readonly buffer: ArrayBufferLike;
  readonly u8: Uint8Array;
  readonly dv: DataView;
  readonly regions: MemoryRegion[] = [];
  readonly hostOff: number[] = [];
  readonly mem: GuestMemory;
  private readonly guardByte: number;

  constructor(specs: readonly MockRegionSpec[], opts: MockGuestOptions = {}) {
    const guard = align8(opts.guard ?? 64);
    this.guardByte = opts.guardByte ?? 0xa5;
    let total = guard;
    for (const s of specs) total += align8(s.size) + guard;
    this.buffer = opts.shared === false ? new ArrayBuffer(total) : new SharedArrayBuffer(total);
    this.u8 = new Uint8Array(this.buffer);
    this.dv = new DataView(this.buffer);
    this.u8.fill(this.guardByte);
    let off = guard;
    for (const s of specs) {
      const bytes = new Uint8Array(this.buffer, off, s.size);
      bytes.fill(0);
      this.regions.push({ guestPhysAddr: s.gpa, size: s.size, userAddr: s.ua, bytes });
      this.hostOff.push(off);
      off += align8(s.size) + guard;
    }
    this.mem = new GuestMemory(this.regions);
  }

  /** True if no byte outside the region views was modified. */
  guardsIntact(): boolean {
    let pos = 0;
    for (let i = 0; i <= this.regions.length; i++) {
      const end = i < this.regions.length ? this.hostOff[i]! : this.u8.length;
      for (; pos < end; pos++) if (this.u8[pos] !== this.guardByte) return false;
      if (i < this.regions.length) pos = end + this.regions[i]!.size;
    }
    return true;
  }

  host(gpa: number, len = 1): number {
    for (let i = 0; i < this.regions.length; i++) {
      const r = this.regions[i]!;
      if (gpa >= r.guestPhysAddr && gpa + len <= r.guestPhysAddr + r.size) {
        return this.hostOff[i]! + gpa - r.guestPhysAddr;
      }
    }
    throw new RangeError(`mock: gpa 0x${gpa.toString(16)}+${len} not mapped`);
  }

  uaOf(gpa: number): number {
    for (const r of this.regions) {
      if (gpa >= r.guestPhysAddr && gpa < r.guestPhysAddr + r.size) return r.userAddr + gpa - r.guestPhysAddr;
    }
    throw new RangeError(`mock: gpa 0x${gpa.toString(16)} not mapped`);
  }

  write(gpa: number, data: Uint8Array): void {
    this.u8.set(data, this.host(gpa, data.length));
  }

  read(gpa: number, len: number): Uint8Array {
    const h = this.host(gpa, len);
    return this.u8.slice(h, h + len);
  }
}

export interface MockBuf {
  addr: number;
  len: number;
  write?: boolean;
}

export const VIRTQ_DESC_F_NEXT = 1;
export const VIRTQ_DESC_F_WRITE = 2;
export const VIRTQ_DESC_F_INDIRECT = 4;

/** Driver side of one split queue, rings at guest-physical addresses. */
export class MockVirtq {
  readonly descUA: number;
  readonly availUA: number;
  readonly usedUA: number;
  availIdx = 0; // driver's shadow of avail.idx
  usedSeen = 0; // next used entry the driver will read
  private readonly free: number[] = [];
  private readonly chains = new Map<number, number[]>();

  constructor(
    readonly g: MockGuest, readonly size: number,
    readonly descGpa: number, readonly availGpa: number, readonly usedGpa: number,
  ) {
    this.descUA = g.uaOf(descGpa);
    this.availUA = g.uaOf(availGpa);
    this.usedUA = g.uaOf(usedGpa);
    for (let i = size - 1; i >= 0; i--) this.free.push(i);
  }

  /** Lays the rings out back to back from `base` (desc, avail, used at 4 KiB). */
  static at(g: MockGuest, size: number, base: number): MockVirtq {
    const avail = base + 16 * size;
    const used = (avail + 6 + 2 * size + 4095) & ~4095;
    return new MockVirtq(g, size, base, avail, used);
  }

  setDesc(i: number, addr: number | bigint, len: number, flags: number, next: number): void {
    writeDesc(this.g, this.descGpa + 16 * i, addr, len, flags, next);
  }

  /** Allocates descriptors for `bufs`, links them, and (by default) publishes. */
  addChain(bufs: readonly MockBuf[], publish = true): number {
    if (bufs.length > this.free.length) throw new Error('mock: out of descriptors');
    const ids = bufs.map(() => this.free.pop()!);
    bufs.forEach((b, k) => {
      const last = k === bufs.length - 1;
      const flags = (last ? 0 : VIRTQ_DESC_F_NEXT) | (b.write ? VIRTQ_DESC_F_WRITE : 0);
      this.setDesc(ids[k]!, b.addr, b.len, flags, last ? 0 : ids[k + 1]!);
    });
    this.chains.set(ids[0]!, ids);
    if (publish) this.publish(ids[0]!);
    return ids[0]!;
  }

  /** One INDIRECT descriptor pointing at a table written at `tableGpa`. */
  addIndirect(tableGpa: number, bufs: readonly MockBuf[], extraFlags = 0, publish = true): number {
    bufs.forEach((b, k) => {
      const last = k === bufs.length - 1;
      const flags = (last ? 0 : VIRTQ_DESC_F_NEXT) | (b.write ? VIRTQ_DESC_F_WRITE : 0);
      writeDesc(this.g, tableGpa + 16 * k, b.addr, b.len, flags, last ? 0 : k + 1);
    });
    const id = this.free.pop()!;
    this.setDesc(id, tableGpa, 16 * bufs.length, VIRTQ_DESC_F_INDIRECT | extraFlags, 0);
    this.chains.set(id, [id]);
    if (publish) this.publish(id);
    return id;
  }

  /** Puts `head` in the avail ring and bumps avail.idx (release). */
  publish(head: number): void {
    this.setAvailEntry(this.availIdx, head);
    this.availIdx = (this.availIdx + 1) & 0xffff;
    this.setAvailIdx(this.availIdx);
  }

  setAvailEntry(pos: number, head: number): void {
    this.g.dv.setUint16(this.g.host(this.availGpa + 4 + 2 * (pos % this.size), 2), head, true);
  }

  setAvailIdx(v: number): void {
    Atomics.store(new Uint16Array(this.g.buffer), this.g.host(this.availGpa + 2, 2) / 2, v);
  }

  setAvailFlags(v: number): void {
    this.g.dv.setUint16(this.g.host(this.availGpa, 2), v, true);
  }

  setUsedEvent(v: number): void {
    this.g.dv.setUint16(this.g.host(this.availGpa + 4 + 2 * this.size, 2), v, true);
  }

  usedIdx(): number {
    return this.g.dv.getUint16(this.g.host(this.usedGpa + 2, 2), true);
  }

  usedFlags(): number {
    return this.g.dv.getUint16(this.g.host(this.usedGpa, 2), true);
  }

  availEvent(): number {
    return this.g.dv.getUint16(this.g.host(this.usedGpa + 4 + 8 * this.size, 2), true);
  }

  /** Reads new used entries and frees their descriptors. */
  takeUsed(): { id: number; len: number }[] {
    const out: { id: number; len: number }[] = [];
    const end = this.usedIdx();
    for (; this.usedSeen !== end; this.usedSeen = (this.usedSeen + 1) & 0xffff) {
      const h = this.g.host(this.usedGpa + 4 + 8 * (this.usedSeen % this.size), 8);
      const id = this.g.dv.getUint32(h, true);
      out.push({ id, len: this.g.dv.getUint32(h + 4, true) });
      const ids = this.chains.get(id);
      if (ids !== undefined) {
        this.chains.delete(id);
        for (const d of ids) this.free.push(d);
      }
    }
    return out;
  }

  /**
   * Benchmark refill: re-posts every completed chain unchanged (the same
   * descriptors and buffers), as a guest recycling fixed buffers would.
   */
  recycleUsed(): number {
    const end = this.usedIdx();
    let n = 0;
    for (; this.usedSeen !== end; this.usedSeen = (this.usedSeen + 1) & 0xffff, n++) {
      const id = this.g.dv.getUint32(this.g.host(this.usedGpa + 4 + 8 * (this.usedSeen % this.size), 8), true);
      this.setAvailEntry(this.availIdx, id);
      this.availIdx = (this.availIdx + 1) & 0xffff;
    }
    if (n !== 0) this.setAvailIdx(this.availIdx);
    return n;
  }
}

/** `addr` as bigint to express u64 values beyond 2^53 exactly. */
export function writeDesc(g: MockGuest, gpa: number, addr: number | bigint, len: number, flags: number, next: number): void {
  const h = g.host(gpa, 16);
  const a = BigInt.asUintN(64, BigInt(addr));
  g.dv.setUint32(h, Number(a & 0xffffffffn), true);
  g.dv.setUint32(h + 4, Number(a >> 32n), true);
  g.dv.setUint32(h + 8, len >>> 0, true);
  g.dv.setUint16(h + 12, flags, true);
  g.dv.setUint16(h + 14, next, true);
}

function align8(n: number): number {
  return Math.ceil(n / 8) * 8;
}
