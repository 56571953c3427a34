// Guest memory as seen by the back-end: a small table of mapped regions, each
// addressable by guest-physical address (descriptor `addr` fields) and by
// front-end virtual address (SET_VRING_ADDR ring addresses).
//
// The mmap layer fills this in. Every later access to guest memory goes
// through an offset that one of the translate methods proved to lie inside a
// region view, so nothing here or in the rings ever relies on typed arrays
// silently ignoring (or throwing on) out-of-range indices.

export interface MemoryRegion {
  /** Guest-physical start (vhost-user `guest_phys_addr`). */
  guestPhysAddr: number;
  /** Length in bytes; `bytes.length` must equal it. */
  size: number;
  /** Front-end virtual start (vhost-user `userspace_addr`). */
  userAddr: number;
  /** View of exactly this region's bytes (mmap_offset already applied). */
  bytes: Uint8Array;
}

/** Raised only at construction, from front-end (control-plane) data. */
export class GuestMemoryError extends Error {
  override readonly name = 'GuestMemoryError';
}

/**
 * vhost-user offers up to 32 slots, but one Node typed array cannot exceed
 * `buffer.constants.MAX_LENGTH` (4 GiB on Node 20), so the mmap layer must cut a
 * larger region into several adjacent views. Headroom for that.
 */
export const MAX_REGIONS = 64;

// Typed-array views use host byte order; virtio 1.x rings are little-endian.
const HOST_LE = new Uint8Array(new Uint16Array([1]).buffer)[0] === 1;

export class GuestMemory {
  readonly count: number;
  readonly regions: readonly Readonly<MemoryRegion>[];
  /** Per-region views; index = region index returned through `lastRegion`. */
  readonly u8: Uint8Array[];
  readonly u16: Uint16Array[];
  readonly u32: Uint32Array[];
  readonly dv: DataView[];
  /** Region of the last successful translate*(); valid until the next call. */
  lastRegion = 0;

  private readonly gpaStart: Float64Array;
  private readonly uaStart: Float64Array;
  private readonly sizes: Float64Array;
  // Separate caches: ring addresses (user) and buffers (gpa) usually live in
  // different regions, and they alternate on the hot path.
  private gpaHint = 0;
  private uaHint = 0;

  constructor(regions: readonly MemoryRegion[]) {
    if (!HOST_LE) throw new GuestMemoryError('big-endian hosts are not supported');
    const n = regions.length;
    if (n < 1 || n > MAX_REGIONS) {
      throw new GuestMemoryError(`region count ${n} not in 1..${MAX_REGIONS}`);
    }
    this.count = n;
    this.gpaStart = new Float64Array(n);
    this.uaStart = new Float64Array(n);
    this.sizes = new Float64Array(n);
    this.u8 = [];
    this.u16 = [];
    this.u32 = [];
    this.dv = [];
    const copy: Readonly<MemoryRegion>[] = [];
    for (let i = 0; i < n; i++) {
      const r = regions[i]!;
      const { guestPhysAddr: gpa, size, userAddr: ua, bytes } = r;
      if (!isAddr(gpa) || !isAddr(ua) || !isAddr(size) || size === 0) {
        throw new GuestMemoryError(`region ${i}: addresses/size must be safe non-negative integers, size > 0`);
      }
      // The front-end controls all three values: a region reaching past 2^53
      // would make our double arithmetic inexact, so bounds checks could lie.
      if (gpa + size > Number.MAX_SAFE_INTEGER || ua + size > Number.MAX_SAFE_INTEGER) {
        throw new GuestMemoryError(`region ${i}: end beyond 2^53`);
      }
      if (!(bytes instanceof Uint8Array) || bytes.length !== size) {
        throw new GuestMemoryError(`region ${i}: bytes.length ${bytes?.length} != size ${size}`);
      }
      // Needed for the u16/u32 ring views; mmap'ed views are page aligned.
      if (bytes.byteOffset % 8 !== 0) {
        throw new GuestMemoryError(`region ${i}: view not 8-byte aligned in its buffer`);
      }
      this.gpaStart[i] = gpa;
      this.uaStart[i] = ua;
      this.sizes[i] = size;
      this.u8.push(bytes);
      this.u16.push(new Uint16Array(bytes.buffer, bytes.byteOffset, Math.floor(size / 2)));
      this.u32.push(new Uint32Array(bytes.buffer, bytes.byteOffset, Math.floor(size / 4)));
      this.dv.push(new DataView(bytes.buffer, bytes.byteOffset, size));
      copy.push(Object.freeze({ guestPhysAddr: gpa, size, userAddr: ua, bytes }));
    }
    // Overlapping regions are tolerated: every translation is checked against
    // the one view it returns, so overlap cannot cause an out-of-view access.
    // (The mmap layer may even overlap split views on purpose so that rings
    // never straddle a split point.)
    this.regions = copy;
  }

  /**
   * Guest-physical range -> byte offset inside region `lastRegion`, or -1 if
   * [gpa, gpa+len) is not entirely inside one region. Allocation-free.
   * NaN / negative inputs fail every comparison and yield -1.
   */
  translateGpa(gpa: number, len: number): number {
    const r = this.gpaHint;
    const off = gpa - this.gpaStart[r]!;
    // `size - len` rather than `off + len`: exact for all safe integers.
    if (off >= 0 && len >= 0 && off <= this.sizes[r]! - len) {
      this.lastRegion = r;
      return off;
    }
    return this.scan(this.gpaStart, gpa, len, true);
  }

  /** Same as translateGpa for front-end virtual addresses. */
  translateUser(ua: number, len: number): number {
    const r = this.uaHint;
    const off = ua - this.uaStart[r]!;
    if (off >= 0 && len >= 0 && off <= this.sizes[r]! - len) {
      this.lastRegion = r;
      return off;
    }
    return this.scan(this.uaStart, ua, len, false);
  }

  /**
   * Index of a region containing the single byte at `gpa`, or -1; sets
   * `lastRegion`. Used to split a descriptor that crosses adjacent regions.
   */
  regionOfGpa(gpa: number): number {
    const off = this.scan(this.gpaStart, gpa, 1, true);
    return off < 0 ? -1 : this.lastRegion;
  }

  regionGpaStart(r: number): number {
    return this.gpaStart[r]!;
  }

  regionSize(r: number): number {
    return this.sizes[r]!;
  }

  private scan(starts: Float64Array, addr: number, len: number, gpa: boolean): number {
    if (!(len >= 0)) return -1;
    for (let r = 0; r < this.count; r++) {
      const off = addr - starts[r]!;
      if (off >= 0 && off <= this.sizes[r]! - len) {
        if (gpa) this.gpaHint = r;
        else this.uaHint = r;
        this.lastRegion = r;
        return off;
      }
    }
    return -1;
  }
}

function isAddr(x: unknown): x is number {
  return typeof x === 'number' && Number.isSafeInteger(x) && x >= 0;
}
