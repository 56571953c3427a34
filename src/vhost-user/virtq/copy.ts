// Byte copies between guest mappings (or a guest mapping and a host buffer).
// Callers have already bounds-checked both ranges.
//
// Measured on this machine (Node 20.20, x86_64, non-shared ArrayBuffers, data
// in L2), ns per copy:
//                         14 B   64 B  128 B  256 B  512 B  1500 B
//   dst.set(src.subarray)   48     52     52     54     59      83
//   Buffer.prototype.copy   60     60     60     65     76      92
//   byte loop               25     87    169    336    688    2000
//   Uint32Array loop (*)    14     19     30     53     99     277
//   DataView u32 loop       13     20     33     60    114     325
//   (*) only when src and dst are congruent mod 4; otherwise ~2x the byte loop.
// set(subarray) pays ~45 ns of fixed cost (it allocates the subarray view) but
// then runs at memcpy speed; the DataView loop handles any alignment with no
// allocation. Crossover ~256 B. On SharedArrayBuffers V8 copies with relaxed
// atomics and set() becomes much slower when unaligned (1500 B: ~500 ns),
// which makes the DataView loop relatively better there; production mappings
// (koffi views of mmap) are plain ArrayBuffers.

const SMALL_COPY_MAX = 256;

export function copyBytes(
  src: Uint8Array, srcDv: DataView, so: number,
  dst: Uint8Array, dstDv: DataView, dof: number, n: number,
): void {
  if (n > SMALL_COPY_MAX) {
    dst.set(src.subarray(so, so + n), dof);
    return;
  }
  // Offsets come from Float64Arrays (views may exceed 2 GiB) and would keep
  // the loop in double arithmetic (~1.5-2x slower at 64 B); below 2^31 they
  // are int32s.
  if (so + n <= 0x7fffffff && dof + n <= 0x7fffffff) {
    let i = so | 0;
    let j = dof | 0;
    const end = (i + (n & ~3)) | 0;
    while (i < end) {
      dstDv.setUint32(j, srcDv.getUint32(i, true), true);
      i = (i + 4) | 0;
      j = (j + 4) | 0;
    }
    for (let t = n & 3; t > 0; t--) dst[j++] = src[i++]!;
    return;
  }
  const end = so + (n & ~3);
  while (so < end) {
    dstDv.setUint32(dof, srcDv.getUint32(so, true), true);
    so += 4;
    dof += 4;
  }
  for (let t = n & 3; t > 0; t--) dst[dof++] = src[so++]!;
}

// DataViews for host buffers handed to readFrame/writeFrame. Callers reuse a
// buffer or two (e.g. one for tap reads, one for writes), so a two-entry cache
// means no allocation in steady state.
let u8A: Uint8Array | null = null;
let dvA: DataView | null = null;
let u8B: Uint8Array | null = null;
let dvB: DataView | null = null;

export function dataViewOf(u8: Uint8Array): DataView {
  if (u8 === u8A) return dvA!;
  if (u8 !== u8B) {
    u8B = u8;
    dvB = new DataView(u8.buffer, u8.byteOffset, u8.byteLength);
  }
  // Most recent first.
  const u = u8A, d = dvA;
  u8A = u8B; dvA = dvB; u8B = u; dvB = d;
  return dvA!;
}
