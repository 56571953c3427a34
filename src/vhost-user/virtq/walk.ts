// Descriptor chain walking (spec 2.7.5) with the checks a hostile guest
// requires. Each descriptor is read once into locals, validated, then used:
// the guest may rewrite the table concurrently.

import {
  BAD_ADDR, BAD_INDIRECT_ADDR, BAD_INDIRECT_LEN, BAD_INDIRECT_NESTED,
  BAD_INDIRECT_NOT_NEGOTIATED, BAD_INDIRECT_WITH_NEXT, BAD_LOOP, BAD_NEXT_RANGE,
  BAD_ORDER, BAD_TOO_LONG, BAD_TOO_MANY_SEGMENTS, CHAIN_OK, type ChainScratch,
} from './chain.js';
import type { GuestMemory } from './memory.js';

const F_NEXT = 1;
const F_WRITE = 2;
const F_INDIRECT = 4;
const MAX_U32 = 0xffffffff;

/**
 * Walks the chain at `head` of the descriptor table (u32 view `desc32`, entry
 * 0 at u32 index `descBase`, `size` entries) into `out`. Returns CHAIN_OK or
 * a BAD_* code; never throws, never reads outside `desc32`'s validated table
 * or a region view.
 */
export function walkChain(
  mem: GuestMemory, desc32: Uint32Array, descBase: number, size: number,
  indirectOk: boolean, head: number, out: ChainScratch,
): number {
  out.head = head;
  out.mem = mem;
  // The common case first: one direct descriptor (no NEXT, no INDIRECT),
  // inside one region. Same reads and checks as the loop below, which
  // handles everything else (including what this path declines).
  {
    const p = descBase + head * 4;
    const lo = desc32[p]!, hi = desc32[p + 1]!, len = desc32[p + 2]!;
    const flags = desc32[p + 3]! & 0xffff;
    if ((flags & ~F_WRITE) === 0 && len !== 0 && hi <= 0x1fffff) {
      const off = mem.translateGpa(hi * 4294967296 + lo, len);
      if (off >= 0) {
        const w = flags >>> 1;
        out.region[0] = mem.lastRegion;
        out.offset[0] = off;
        out.length[0] = len;
        out.writable[0] = w;
        out.count = 1;
        out.firstWritable = w === 0 ? 1 : 0;
        out.readable = w === 0 ? len : 0;
        out.writableBytes = w === 0 ? 0 : len;
        return CHAIN_OK;
      }
    }
  }
  out.count = 0;
  out.firstWritable = 0;
  out.readable = 0;
  out.writableBytes = 0;
  let t32 = desc32;
  let tBase = descBase; // u32 index of entry 0 (aligned tables)
  let tDv: DataView | null = null; // unaligned indirect table
  let tOff = 0;
  let tLen = size; // entries in the current table
  let budget = size; // loop bound: a chain visits each entry at most once
  let indirect = false;
  let sawWritable = false;
  let idx = head;
  for (;;) {
    if (budget-- === 0) return BAD_LOOP;
    let lo: number, hi: number, len: number, fn: number;
    if (tDv === null) {
      const p = tBase + idx * 4;
      lo = t32[p]!; hi = t32[p + 1]!; len = t32[p + 2]!; fn = t32[p + 3]!;
    } else {
      const p = tOff + idx * 16;
      lo = tDv.getUint32(p, true); hi = tDv.getUint32(p + 4, true);
      len = tDv.getUint32(p + 8, true); fn = tDv.getUint32(p + 12, true);
    }
    const flags = fn & 0xffff;
    // At or above 2^53 nothing is mapped (and doubles lose precision): use
    // -1, which every translation refuses.
    const addr = hi > 0x1fffff ? -1 : hi * 4294967296 + lo;
    if ((flags & F_INDIRECT) !== 0) {
      // Spec 2.7.5.3: only if negotiated, never nested, never with NEXT
      // (so it is the last descriptor of the direct chain, which the device
      // MUST accept), table of len/16 entries; its WRITE flag is ignored.
      if (!indirectOk) return BAD_INDIRECT_NOT_NEGOTIATED;
      if (indirect) return BAD_INDIRECT_NESTED;
      if ((flags & F_NEXT) !== 0) return BAD_INDIRECT_WITH_NEXT;
      if (len === 0 || (len & 15) !== 0) return BAD_INDIRECT_LEN;
      const off = mem.translateGpa(addr, len);
      if (off < 0) return BAD_INDIRECT_ADDR;
      const r = mem.lastRegion;
      // Alignment of indirect tables is not required by the spec.
      if (off % 4 === 0) {
        t32 = mem.u32[r]!; tBase = off / 4; tDv = null;
      } else {
        tDv = mem.dv[r]!; tOff = off;
      }
      tLen = len >>> 4;
      // Spec 2.7.5.3.1: no chain longer than the queue size, indirect
      // descriptors included. A table's len/16 is the guest's choice (up to a
      // whole region): bounding by it alone would let one chain of zero-length
      // descriptors cost millions of steps in the worker every port shares.
      budget = tLen < size ? tLen : size;
      indirect = true;
      idx = 0;
      continue;
    }
    if ((flags & F_WRITE) !== 0) {
      if (!sawWritable) { sawWritable = true; out.firstWritable = out.count; }
      out.writableBytes += len;
    } else {
      // Spec 2.7.4.2: device-writable elements come after device-readable.
      if (sawWritable) return BAD_ORDER;
      out.readable += len;
    }
    if (len !== 0) {
      const off = mem.translateGpa(addr, len);
      if (off >= 0) {
        const c = out.count;
        if (c === out.capacity) return BAD_TOO_MANY_SEGMENTS;
        out.region[c] = mem.lastRegion;
        out.offset[c] = off;
        out.length[c] = len;
        out.writable[c] = (flags & F_WRITE) >>> 1;
        out.count = c + 1;
      } else {
        const r = splitSegment(out, mem, addr, len, (flags & F_WRITE) >>> 1);
        if (r !== CHAIN_OK) return r;
      }
    }
    if ((flags & F_NEXT) === 0) break;
    const next = fn >>> 16;
    if (next >= tLen) return BAD_NEXT_RANGE;
    idx = next;
  }
  if (!sawWritable) out.firstWritable = out.count;
  // Spec 2.7.5: a chain longer than 2^32 bytes in total is invalid (and a
  // used.len could not describe it).
  if (out.readable + out.writableBytes > MAX_U32) return BAD_TOO_LONG;
  return CHAIN_OK;
}

// A buffer crossing from one region into an adjacent one (contiguous guest
// physical addresses, e.g. two memory backends, or one big region that the
// mmap layer had to cut into <= 4 GiB views) is split into one segment per
// region rather than rejected. Every piece must be covered.
function splitSegment(out: ChainScratch, mem: GuestMemory, addr: number, len: number, w: number): number {
  let a = addr;
  let rem = len;
  while (rem > 0) {
    const r = mem.regionOfGpa(a);
    if (r < 0) return BAD_ADDR;
    const off = a - mem.regionGpaStart(r);
    const room = mem.regionSize(r) - off;
    const n = rem < room ? rem : room;
    const c = out.count;
    if (c === out.capacity) return BAD_TOO_MANY_SEGMENTS;
    out.region[c] = r;
    out.offset[c] = off;
    out.length[c] = n;
    out.writable[c] = w;
    out.count = c + 1;
    a += n;
    rem -= n;
  }
  return CHAIN_OK;
}
