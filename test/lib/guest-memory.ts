// Guest memory for the test front-end: a memfd mapped here and announced to
// the back-end as one or two regions, with gpa -> offset translation.
import { closeFd, koffi } from '../../src/sys/libc.js';
import { mapShared, unmap, type Mapping } from '../../src/sys/mmap.js';
import type { MemRegion } from '../../src/vhost-user/protocol/index.js';
import { memfdCreate } from './frontend-syscalls.js';

export const PAGE = 4096;

export interface GuestMemoryOptions {
  /** Bytes of the memfd (default 4 MiB). */
  size?: number;
  /** Guest-physical address of byte 0 (default 1 GiB: not 0, so gpa/offset mix-ups show). */
  gpaBase?: number;
  /**
   * Front-end virtual address of byte 0. Deliberately unrelated to the real
   * mapping address and to gpaBase: the back-end must only translate it.
   */
  uaBase?: number;
  /**
   * 2: the memfd is announced as two regions (the second half with a
   * non-zero mmap_offset and a user address that is not contiguous), as
   * QEMU does for memory split around a hole.
   */
  regions?: 1 | 2;
  /** memfd name, visible in /proc/PID/maps of whoever maps it. */
  name?: string;
  /** false: a memfd nobody can seal (as DPDK --no-huge makes); default sealable, like QEMU's. */
  sealable?: boolean;
  /**
   * Use the mapping's real address as uaBase (vhost-net reads our memory
   * through our own address space, so addresses must be true ones).
   */
  realAddresses?: boolean;
}

/**
 * A memfd mapped into this process, announced to the back-end as guest
 * memory. It duck-types the few MockGuest members MockVirtq uses (buffer, dv,
 * host, uaOf), so the mock driver's ring code runs over shared memory that
 * the back-end maps too.
 */
export class GuestMemfd {
  readonly fd: number;
  readonly size: number;
  readonly gpaBase: number;
  readonly uaBase: number;
  readonly name: string;
  private readonly map: Mapping;
  readonly buffer: ArrayBuffer;
  readonly u8: Uint8Array;
  readonly dv: DataView;
  private readonly split: number;
  private readonly ua2: number;

  constructor(opts: GuestMemoryOptions = {}) {
    this.size = opts.size ?? 4 << 20;
    this.gpaBase = opts.gpaBase ?? 0x4000_0000;
    this.uaBase = opts.uaBase ?? 0x7f12_3400_0000;
    this.name = opts.name ?? 'qnh-guest';
    this.fd = memfdCreate(this.name, this.size, opts.sealable ?? true);
    this.map = mapShared(this.fd, this.size);
    if (opts.realAddresses) this.uaBase = Number(koffi.address(this.map.ptr));
    this.buffer = this.map.buffer;
    this.u8 = new Uint8Array(this.buffer);
    this.dv = new DataView(this.buffer);
    this.split = opts.regions === 2 ? this.size / 2 : this.size;
    this.ua2 = this.uaBase + this.split + 0x1000_0000;
  }

  /** The memory table to announce (one fd per region: `fds()`). */
  regions(): MemRegion[] {
    const r: MemRegion[] = [{
      guestPhysAddr: BigInt(this.gpaBase), memorySize: BigInt(this.split), userspaceAddr: BigInt(this.uaBase), mmapOffset: 0n,
    }];
    if (this.split < this.size) {
      r.push({
        guestPhysAddr: BigInt(this.gpaBase + this.split), memorySize: BigInt(this.size - this.split),
        userspaceAddr: BigInt(this.ua2), mmapOffset: BigInt(this.split),
      });
    }
    return r;
  }

  fds(): number[] {
    return this.regions().map(() => this.fd);
  }

  /**
   * Offset in the mapping of [gpa, gpa+len); throws outside guest memory, and
   * after close(): the views then point at unmapped memory, and a polling
   * loop a test abandoned must get an exception, not SIGSEGV the test runner.
   */
  host(gpa: number, len = 1): number {
    if (this.unmapped) throw new Error(`guest memory ${this.name} is closed`);
    const off = gpa - this.gpaBase;
    if (!(off >= 0 && off + len <= this.size)) throw new RangeError(`gpa 0x${gpa.toString(16)}+${len} outside guest memory`);
    return off;
  }

  uaOf(gpa: number): number {
    const off = this.host(gpa);
    return off < this.split ? this.uaBase + off : this.ua2 + off - this.split;
  }

  write(gpa: number, data: Uint8Array): void {
    this.u8.set(data, this.host(gpa, data.length));
  }

  read(gpa: number, len: number): Uint8Array {
    const h = this.host(gpa, len);
    return this.u8.slice(h, h + len);
  }

  /** A split-ring descriptor at `gpa` (direct table slot or indirect table entry); `addr` may exceed 2^53. */
  writeDesc(gpa: number, addr: number | bigint, len: number, flags: number, next: number): void {
    const h = this.host(gpa, 16);
    this.dv.setBigUint64(h, BigInt.asUintN(64, BigInt(addr)), true);
    this.dv.setUint32(h + 8, len >>> 0, true);
    this.dv.setUint16(h + 12, flags, true);
    this.dv.setUint16(h + 14, next, true);
  }

  private unmapped = false;

  close(): void {
    if (this.unmapped) return;
    this.unmapped = true;
    unmap(this.map);
    closeFd(this.fd);
  }
}
