// The control plane's view of guest memory: which fd backs which range. It
// never maps anything (the data path does); it validates tables and ring
// addresses and owns the region fds until the data path has remapped. A
// table is checked against the port's limits here, on plain numbers, before
// the data path (one worker every port shares) maps a byte of it.
import { closeFd } from '../../sys/libc.js';
import type { MemRegion } from '../protocol/index.js';
import type { RegionSpec } from '../dataplane/api.js';
import { CHUNK } from '../dataplane/port.js';
import { MAX_REGIONS as MAX_VIEWS } from '../virtq/memory.js';

export const MAX_REGIONS = 32;

export interface MemoryLimits {
  /** Total bytes of guest memory one port may map. */
  maxBytes: number;
  /** Regions in one table (also what GET_MAX_MEM_SLOTS advertises); at most MAX_REGIONS. */
  maxRegions: number;
}

/**
 * 128 GiB: the most the data path can view today (64 views of 2 GiB). Each
 * view costs the shared worker a full garbage collection (V8 accounts the
 * mapping as external memory), so the bound is also a bound on the time a
 * table stalls the other ports: ~0.2 s for 64 views on this machine.
 */
export const DEFAULT_MEMORY_LIMITS: Readonly<MemoryLimits> = { maxBytes: 128 * 2 ** 30, maxRegions: MAX_REGIONS };

/** Views of at most CHUNK bytes the data path makes for these regions (dataplane/port.ts setMemory). */
export function viewsNeeded(regions: readonly { size: number }[]): number {
  return regions.reduce((n, r) => n + Math.ceil(r.size / CHUNK), 0);
}

/** A table within the port's limits, or MemoryError saying which bound it passes. O(regions), never O(bytes). */
export function checkLimits(regions: readonly { size: number }[], limits: MemoryLimits = DEFAULT_MEMORY_LIMITS): void {
  if (regions.length > limits.maxRegions) throw new MemoryError(`${regions.length} regions; at most ${limits.maxRegions}`);
  const total = regions.reduce((n, r) => n + r.size, 0);
  if (total > limits.maxBytes) throw new MemoryError(`${formatBytes(total)} of guest memory; this switch maps at most ${formatBytes(limits.maxBytes)} per port (--max-guest-memory)`);
  const views = viewsNeeded(regions);
  if (views > MAX_VIEWS) throw new MemoryError(`the table needs ${views} views of 2 GiB; the data path has ${MAX_VIEWS}`);
}

export function formatBytes(n: number): string {
  for (const [unit, size] of [['TiB', 2 ** 40], ['GiB', 2 ** 30], ['MiB', 2 ** 20], ['KiB', 2 ** 10]] as const) {
    if (n >= size && n % size === 0) return `${n / size} ${unit}`;
  }
  return n >= 2 ** 30 ? `${(n / 2 ** 30).toFixed(1)} GiB` : `${n} bytes`;
}

/** "512M", "64G", "1T", a plain byte count -> bytes. */
export function parseByteSize(text: string): number | null {
  const m = /^(\d+)([KMGT]i?B?)?$/i.exec(text.trim());
  if (!m) return null;
  const mult = { '': 1, K: 2 ** 10, M: 2 ** 20, G: 2 ** 30, T: 2 ** 40 }[(m[2] ?? '').charAt(0).toUpperCase() as '' | 'K' | 'M' | 'G' | 'T'];
  const n = Number(m[1]) * mult;
  return Number.isSafeInteger(n) ? n : null;
}

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
  static check(regions: RegionSpec[], limits?: MemoryLimits): void {
    checkLimits(regions, limits);
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
