// The control plane's view of guest memory: which fd backs which range. It
// never maps anything (the data path does); it validates tables and ring
// addresses and owns the region fds until the data path has remapped.
import { closeFd } from '../../sys/libc.js';
import type { MemRegion } from '../protocol/index.js';
import type { RegionSpec } from '../dataplane/api.js';

export const MAX_REGIONS = 32;

export class MemoryError extends Error {}

function toNumber(v: bigint, what: string): number {
  if (v > BigInt(Number.MAX_SAFE_INTEGER)) throw new MemoryError(`${what} 0x${v.toString(16)} is beyond 2^53`);
  return Number(v);
}

export function regionSpec(r: MemRegion, fd: number): RegionSpec {
  const spec = {
    fd,
    guestPhysAddr: toNumber(r.guestPhysAddr, 'guest_phys_addr'),
    size: toNumber(r.memorySize, 'memory_size'),
    userAddr: toNumber(r.userspaceAddr, 'userspace_addr'),
    mmapOffset: toNumber(r.mmapOffset, 'mmap_offset'),
  };
  toNumber(r.guestPhysAddr + r.memorySize, 'region end');
  toNumber(r.userspaceAddr + r.memorySize, 'region end');
  toNumber(r.mmapOffset + r.memorySize, 'mapping end');
  return spec;
}

export class MemoryTable {
  regions: RegionSpec[] = [];

  /** Validates a new table: no overlapping guest-physical or user ranges. */
  static check(regions: RegionSpec[]): void {
    if (regions.length > MAX_REGIONS) throw new MemoryError(`${regions.length} regions; at most ${MAX_REGIONS}`);
    const overlap = (key: 'guestPhysAddr' | 'userAddr'): void => {
      const s = [...regions].sort((a, b) => a[key] - b[key]);
      for (let i = 1; i < s.length; i++) {
        if (s[i - 1]![key] + s[i - 1]!.size > s[i]![key]) throw new MemoryError(`regions overlap in ${key === 'guestPhysAddr' ? 'guest-physical' : 'front-end virtual'} space`);
      }
    };
    overlap('guestPhysAddr');
    overlap('userAddr');
  }

  /** Whether [uva, uva+len) lies inside one region (ring addresses are front-end virtual). */
  containsUser(uva: number, len: number): boolean {
    return this.regions.some((r) => uva >= r.userAddr && uva + len <= r.userAddr + r.size);
  }

  fds(): number[] { return this.regions.map((r) => r.fd); }

  closeAll(): void {
    for (const fd of this.fds()) closeFd(fd);
    this.regions = [];
  }
}
