// The native fast path (native/*.c): one C call moves a run of frames
// from a guest's TX ring into another guest's RX ring when each is a single
// descriptor and the switch's decision for them is already taken. Everything
// else stays in TypeScript; the C function stops in front of it.
//
// The C side sees a queue through a small block (layout below, asserted in the
// C file): host addresses of the three rings, of the guest's region table,
// and the ring positions, which are copied in before and out after each call
// (SplitQueue keeps the truth). Blocks are ArrayBuffers whose backing store
// does not move, so their addresses are taken once.
//
// Disabled with QNH_NATIVE=0. The library path is fixed relative to this
// module: nothing in the environment chooses code to load.
import { existsSync } from 'node:fs';
import { fileURLToPath } from 'node:url';
// koffi here binds our own library, not libc: it stays beside the ring layout it mirrors (sys/ wraps the kernel's ABI, this the fast path's).
import koffi from 'koffi';
import type { GuestMemory } from './memory.js';
import type { SplitQueue } from './split.js';

const ABI = 4;
const RING_BLOCK = 56;
const POS = 9; // u32 index of last_avail; last_used, avail_cache follow
const STOP = 12; // u32 index of stop
const REGION_TABLE_HEAD = 16;
const REGION_ENTRY = 24;

/** Why the last forward() stopped (native/ring.h QNH_STOP_*). */
export const STOP_MAX = 0;
export const STOP_TX_EMPTY = 1;
export const STOP_TX_OTHER = 2;
export const STOP_MAC = 3;
export const STOP_RX_EMPTY = 4;
export const STOP_RX_OTHER = 5;

const NATIVE_LIBRARY = fileURLToPath(new URL('../../../native/libqnh-fastpath.so', import.meta.url));

type Forward = (tx: number, rx: number, max: number, txHdr: number, rxHdr: number, dst: number, src: number) => number;
type Address = (p: ArrayBufferView) => number | bigint;
type ToPacket = (tx: number, ring: number, max: number, txHdr: number, vnet: number, dst: number, src: number) => number;
type ToXsk = (tx: number, ring: number, max: number, txHdr: number, dst: number, src: number) => number;
type FromPacket = (ring: number, rx: number, max: number, rxHdr: number, vnet: number, dst: number, src: number) => number;
type ToTap = (tx: number, fd: number, max: number, txHdr: number, vnet: number, dst: number, src: number) => number;

interface Lib { forward: Forward; address: Address; toPacket: ToPacket; fromPacket: FromPacket; toTap: ToTap; toXsk: ToXsk }

/** 'native', or why the TypeScript path runs alone. */
export let fastPathStatus = 'native';

function load(): Lib | null {
  if (process.env.QNH_NATIVE === '0') { fastPathStatus = 'disabled (QNH_NATIVE=0)'; return null; }
  if (!existsSync(NATIVE_LIBRARY)) { fastPathStatus = `not built (${NATIVE_LIBRARY} missing: no C compiler at build time?)`; return null; }
  try {
    const lib = koffi.load(NATIVE_LIBRARY);
    const abi = (lib.func('int qnh_abi(void)') as () => number)();
    if (abi !== ABI) { fastPathStatus = `ABI ${abi} of ${NATIVE_LIBRARY}, expected ${ABI}: rebuild`; return null; }
    return {
      forward: lib.func('int qnh_forward(double, double, uint32_t, uint32_t, uint32_t, double, double)') as Forward,
      address: lib.func('uint64_t qnh_address(const void *p)') as Address,
      toPacket: lib.func('int qnh_to_packet(double, double, uint32_t, uint32_t, uint32_t, double, double)') as ToPacket,
      fromPacket: lib.func('int qnh_from_packet(double, double, uint32_t, uint32_t, uint32_t, double, double)') as FromPacket,
      toTap: lib.func('int qnh_to_tap(double, int, uint32_t, uint32_t, uint32_t, double, double)') as ToTap,
      toXsk: lib.func('int qnh_to_xsk(double, double, uint32_t, uint32_t, double, double)') as ToXsk,
    };
  } catch (e) {
    fastPathStatus = `cannot load ${NATIVE_LIBRARY}: ${(e as Error).message}`;
    return null;
  }
}

const lib = load();

// `buf` keeps the table alive while ring blocks hold its address.
interface MemTable { buf: ArrayBuffer; addr: number; host: number[] }
interface RingBlock { u32: Uint32Array; addr: number; gen: number; table: MemTable }

const tables = new WeakMap<GuestMemory, MemTable>();
const blocks = new WeakMap<SplitQueue, RingBlock>();

// Addresses cross as doubles (koffi passes them fastest): exact below 2^53,
// which user-space addresses are (47 bits, 56 with 5-level paging). Checked
// anyway: a rounded address would be a wild pointer.
function addressOf(v: ArrayBufferView): number {
  const a = lib!.address(v);
  const n = Number(a);
  if (!Number.isSafeInteger(n) || BigInt(n) !== BigInt(a)) throw new RangeError(`buffer address ${a} beyond 2^53`);
  return n;
}

function memTable(mem: GuestMemory): MemTable {
  let t = tables.get(mem);
  if (t) return t;
  const buf = new ArrayBuffer(REGION_TABLE_HEAD + REGION_ENTRY * mem.count);
  const head = new Uint32Array(buf, 0, 4);
  const e = new BigUint64Array(buf, REGION_TABLE_HEAD);
  head[0] = mem.count;
  const host: number[] = [];
  for (let r = 0; r < mem.count; r++) {
    const h = addressOf(mem.u8[r]!);
    host.push(h);
    e[r * 3] = BigInt(mem.regionGpaStart(r));
    e[r * 3 + 1] = BigInt(mem.regionSize(r));
    e[r * 3 + 2] = BigInt(h);
  }
  t = { buf, addr: addressOf(new Uint8Array(buf)), host };
  tables.set(mem, t);
  return t;
}

function ringBlock(q: SplitQueue): RingBlock | null {
  const mem = q.mem;
  if (!q.ready || q.broken || mem === null) return null;
  let b = blocks.get(q);
  // setMemory()/setRings() bump layoutGen (the memory can change no other way).
  if (b && b.gen === q.layoutGen) return b;
  try {
    const table = memTable(mem);
    const buf = new ArrayBuffer(RING_BLOCK);
    const u64 = new BigUint64Array(buf, 0, 4);
    const pl = q.place;
    u64[0] = BigInt(table.host[pl[0]!]! + pl[1]!);
    u64[1] = BigInt(table.host[pl[2]!]! + pl[3]!);
    u64[2] = BigInt(table.host[pl[4]!]! + pl[5]!);
    u64[3] = BigInt(table.addr);
    const u32 = new Uint32Array(buf);
    u32[8] = q.size;
    b = { u32, addr: addressOf(u32), gen: q.layoutGen, table };
  } catch {
    return null; // an address beyond 2^53: this queue stays on the TypeScript path
  }
  blocks.set(q, b);
  return b;
}

/** Calls into C so far (to see that the switch does not call it in vain). */
export let nativeCalls = 0;
/** Why the last fastForward() call that reached C stopped (STOP_*). */
export let stopReason = STOP_MAX;

/** The native fast path is loaded. */
export const hasFastPath = lib !== null;

/**
 * Moves up to `max` frames from `tx` into `rx` natively while each TX chain
 * is one readable descriptor with a frame from MAC `src` to MAC `dst` and
 * rx's next chain is one writable descriptor that holds it. Used entries are
 * written, not published (flushUsed() as usual). Returns frames moved (0
 * without the native library, when a ring is not ready or is logging).
 */
export function fastForward(tx: SplitQueue, rx: SplitQueue, max: number, txHdr: number, rxHdr: number, dst: number, src: number): number {
  if (lib === null || tx.log !== null || rx.log !== null || !(dst >= 0 && src >= 0)) return 0;
  const tb = ringBlock(tx);
  const rb = ringBlock(rx);
  if (tb === null || rb === null) return 0;
  tx.savePositions(tb.u32, POS);
  rx.savePositions(rb.u32, POS);
  nativeCalls++;
  const n = lib.forward(tb.addr, rb.addr, max, txHdr, rxHdr, dst, src);
  tx.loadPositions(tb.u32, POS);
  rx.loadPositions(rb.u32, POS);
  stopReason = tb.u32[STOP]!;
  return n;
}

// ---- the uplink's packet rings (dataplane/uplink-io.ts) -----------------

const PRING_BLOCK = 24;
const PRING_NEXT = 4; // u32 index of next; stop follows

/** One TPACKET_V2 ring as the C side sees it: slot 0's address, geometry, the next slot (copied in and out around each call). */
export interface PacketRingBlock { u32: Uint32Array; addr: number }

/**
 * The block for a ring of `frameCount` slots of `frameSize` bytes at byte
 * `offset` of `mem` (which must stay mapped while the block is used), or
 * null without the native library.
 */
export function packetRingBlock(mem: ArrayBuffer, offset: number, frameSize: number, frameCount: number): PacketRingBlock | null {
  if (lib === null || !(offset >= 0 && frameSize * frameCount <= mem.byteLength - offset)) return null;
  const buf = new ArrayBuffer(PRING_BLOCK);
  const u32 = new Uint32Array(buf);
  new BigUint64Array(buf, 0, 1)[0] = BigInt(addressOf(new Uint8Array(mem, offset, 1)));
  u32[2] = frameSize;
  u32[3] = frameCount;
  return { u32, addr: addressOf(u32) };
}

/**
 * Moves up to `max` frames from guest TX queue `tx` into the packet TX ring
 * (marked for sending, not sent) while each is one readable descriptor with a
 * frame from `src` to `dst`. `next`: the ring's next slot; returns frames
 * moved, the ring's next slot in ring.u32[PRING_NEXT] after the call.
 */
export function toPacket(tx: SplitQueue, ring: PacketRingBlock, next: number, max: number, txHdr: number, vnet: number, dst: number, src: number): number {
  if (lib === null || tx.log !== null || !(dst >= 0 && src >= 0)) return 0;
  const tb = ringBlock(tx);
  if (tb === null) return 0;
  tx.savePositions(tb.u32, POS);
  ring.u32[PRING_NEXT] = next;
  nativeCalls++;
  const n = lib.toPacket(tb.addr, ring.addr, max, txHdr, vnet, dst, src);
  tx.loadPositions(tb.u32, POS);
  stopReason = ring.u32[PRING_NEXT + 1]!;
  return n;
}

/** The other way: packet RX ring slots (from `next`) into guest RX queue `rx`, slots handed back as they are delivered. */
export function fromPacket(ring: PacketRingBlock, next: number, rx: SplitQueue, max: number, rxHdr: number, vnet: number, dst: number, src: number): number {
  if (lib === null || rx.log !== null || !(dst >= 0 && src >= 0)) return 0;
  const rb = ringBlock(rx);
  if (rb === null) return 0;
  rx.savePositions(rb.u32, POS);
  ring.u32[PRING_NEXT] = next;
  nativeCalls++;
  const n = lib.fromPacket(ring.addr, rb.addr, max, rxHdr, vnet, dst, src);
  rx.loadPositions(rb.u32, POS);
  stopReason = ring.u32[PRING_NEXT + 1]!;
  return n;
}

/** The ring's next slot after a toPacket()/fromPacket() call. */
export const packetRingNext = (ring: PacketRingBlock): number => ring.u32[PRING_NEXT]!;

/** Guest TX queue `tx` -> tap `fd`: one write() per frame straight from guest memory, a run per call (native/uplink.c qnh_to_tap). */
export function toTap(tx: SplitQueue, fd: number, max: number, txHdr: number, vnet: number, dst: number, src: number): number {
  if (lib === null || tx.log !== null || !(dst >= 0 && src >= 0)) return 0;
  const tb = ringBlock(tx);
  if (tb === null) return 0;
  tx.savePositions(tb.u32, POS);
  nativeCalls++;
  const n = lib.toTap(tb.addr, fd, max, txHdr, vnet, dst, src);
  tx.loadPositions(tb.u32, POS);
  stopReason = tb.u32[STOP]!;
  return n;
}

// ---- the uplink's AF_XDP TX ring (dataplane/xsk-tx.ts) ------------------

const XRING_BLOCK = 56;
const XRING_STOP = 13; // u32 index of stop

/** An AF_XDP TX ring, its completion ring and UMEM as the C side sees them (all state lives in the ring memory). */
export interface XskRingBlock { u32: Uint32Array; addr: number }

/**
 * The block for an AF_XDP socket's rings: the TX ring mapping `tx` (producer
 * index and entries at the given byte offsets), the completion ring `cq`,
 * UMEM `umem` of `frames` frames of `frameSize` bytes; frames up to `maxLen`
 * bytes. All must stay mapped while the block is used; null without the
 * native library.
 */
export function xskRingBlock(tx: ArrayBuffer, txProd: number, txDesc: number, cq: ArrayBuffer, cqProd: number, cqCons: number,
  umem: ArrayBuffer, frames: number, frameSize: number, maxLen: number): XskRingBlock | null {
  if (lib === null || frames * frameSize > umem.byteLength || txDesc + frames * 16 > tx.byteLength) return null;
  const buf = new ArrayBuffer(XRING_BLOCK);
  const u64 = new BigUint64Array(buf, 0, 5);
  const at = (b: ArrayBuffer, off: number): bigint => BigInt(addressOf(new Uint8Array(b, off, 1)));
  u64[0] = at(tx, txProd);
  u64[1] = at(tx, txDesc);
  u64[2] = at(cq, cqProd);
  u64[3] = at(cq, cqCons);
  u64[4] = at(umem, 0);
  const u32 = new Uint32Array(buf);
  u32[10] = frames;
  u32[11] = frameSize;
  u32[12] = maxLen;
  return { u32, addr: addressOf(u32) };
}

/** Guest TX queue `tx` -> the AF_XDP TX ring (queued, not kicked) while each frame is one readable descriptor from `src` to `dst`. */
export function toXsk(tx: SplitQueue, ring: XskRingBlock, max: number, txHdr: number, dst: number, src: number): number {
  if (lib === null || tx.log !== null || !(dst >= 0 && src >= 0)) return 0;
  const tb = ringBlock(tx);
  if (tb === null) return 0;
  tx.savePositions(tb.u32, POS);
  nativeCalls++;
  const n = lib.toXsk(tb.addr, ring.addr, max, txHdr, dst, src);
  tx.loadPositions(tb.u32, POS);
  stopReason = ring.u32[XRING_STOP]!;
  return n;
}
