// The front-end's half of the codec, for our own test driver and fuzzers: build
// requests the way QEMU lays them out, and read the back-end's replies. The
// builders do not enforce the back-end's limits (region counts, alignment),
// so tests can also produce the malformed messages a hostile peer would send.
import { type Header, decodeHeader } from '../../src/vhost-user/protocol/codec.js';
import {
  CONFIG_HEADER_SIZE, HEADER_SIZE, HdrFlag, LOG_SIZE, MEM_REGION_SIZE, MEM_REG_MSG_SIZE,
  MEM_TABLE_HEADER_SIZE, ProtocolError, U64_SIZE, VRING_ADDR_SIZE, VRING_INDEX_MASK,
  VRING_NOFD_MASK, VRING_STATE_SIZE, reqName,
} from '../../src/vhost-user/protocol/messages.js';
import type { MemRegion } from '../../src/vhost-user/protocol/types.js';
import { EMPTY, NATIVE_LE, U32_MAX, Writer, frame, viewOf } from '../../src/vhost-user/protocol/wire.js';

export interface EncodeOptions {
  /** Set NEED_REPLY (REPLY_ACK): the back-end must answer with a u64. */
  needReply?: boolean;
}

/**
 * A whole request: header (VERSION [| NEED_REPLY], size = payload length) +
 * payload. Payloads above MAX_PAYLOAD_SIZE are allowed on purpose (fuzzing).
 */
export function encodeRequest(request: number, payload: Uint8Array = EMPTY, opts: EncodeOptions = {}): Uint8Array {
  return frame(request, HdrFlag.VERSION | (opts.needReply ? HdrFlag.NEED_REPLY : 0), payload, U32_MAX);
}

/**
 * A header with any flags and any size field (true or not) followed by
 * `payload`: the framing a hostile front-end can send.
 */
export function rawRequest(request: number, flags: number, size: number, payload: Uint8Array = EMPTY): Uint8Array {
  const b = new Uint8Array(HEADER_SIZE + payload.length);
  const v = new DataView(b.buffer);
  v.setUint32(0, request, true);
  v.setUint32(4, flags, true);
  v.setUint32(8, size, true);
  b.set(payload, HEADER_SIZE);
  return b;
}

/** u64 payload: SET_FEATURES, SET_PROTOCOL_FEATURES, NET_SET_MTU, SET_STATUS... */
export function u64(value: bigint): Uint8Array {
  return new Writer(U64_SIZE).u64(0, 'value', value).bytes;
}

/** Vring state payload: SET_VRING_NUM/BASE, GET_VRING_BASE, SET_VRING_ENABLE/ENDIAN. */
export function vringState(index: number, num: number): Uint8Array {
  return new Writer(VRING_STATE_SIZE).u32(0, 'index', index).u32(4, 'num', num).bytes;
}

export interface VringAddr {
  index: number;
  flags?: number;
  desc: bigint;
  used: bigint;
  avail: bigint;
  log?: bigint;
}

/** SET_VRING_ADDR payload, in wire order desc, used, avail, log. */
export function vringAddr(a: VringAddr): Uint8Array {
  return new Writer(VRING_ADDR_SIZE)
    .u32(0, 'index', a.index)
    .u32(4, 'flags', a.flags ?? 0)
    .u64(8, 'desc', a.desc)
    .u64(16, 'used', a.used)
    .u64(24, 'avail', a.avail)
    .u64(32, 'log', a.log ?? 0n).bytes;
}

/** SET_VRING_KICK/CALL/ERR payload: ring index in bits 0-7, bit 8 when no fd is sent. */
export function vringFdMsg(index: number, nofd: boolean): Uint8Array {
  if (!Number.isInteger(index) || index < 0 || index > VRING_INDEX_MASK) throw new RangeError(`vring index ${index} does not fit 8 bits`);
  return u64(BigInt(index | (nofd ? VRING_NOFD_MASK : 0)));
}

function putRegion(w: Writer, off: number, r: MemRegion): void {
  w.u64(off, 'guest_phys_addr', r.guestPhysAddr)
    .u64(off + 8, 'memory_size', r.memorySize)
    .u64(off + 16, 'userspace_addr', r.userspaceAddr)
    .u64(off + 24, 'mmap_offset', r.mmapOffset);
}

/** SET_MEM_TABLE payload: nregions, padding, then the regions (send one fd per region). */
export function memTable(regions: readonly MemRegion[]): Uint8Array {
  const w = new Writer(MEM_TABLE_HEADER_SIZE + regions.length * MEM_REGION_SIZE).u32(0, 'nregions', regions.length);
  regions.forEach((r, i) => putRegion(w, MEM_TABLE_HEADER_SIZE + i * MEM_REGION_SIZE, r));
  return w.bytes;
}

/** ADD_MEM_REG / REM_MEM_REG payload: u64 padding, then one region. */
export function memRegionMsg(region: MemRegion): Uint8Array {
  const w = new Writer(MEM_REG_MSG_SIZE);
  putRegion(w, 8, region);
  return w.bytes;
}

/** SET_LOG_BASE payload (send the log fd with it). */
export function logBase(mmapSize: bigint, mmapOffset: bigint): Uint8Array {
  return new Writer(LOG_SIZE).u64(0, 'mmap_size', mmapSize).u64(8, 'mmap_offset', mmapOffset).bytes;
}

/**
 * GET_CONFIG / SET_CONFIG payload. For GET_CONFIG pass the wanted size: QEMU
 * sends a zero-filled data area of that size. For SET_CONFIG pass the data.
 */
export function configMsg(offset: number, flags: number, data: Uint8Array | number): Uint8Array {
  const bytes = typeof data === 'number' ? new Uint8Array(data) : data;
  const w = new Writer(CONFIG_HEADER_SIZE + bytes.length)
    .u32(0, 'offset', offset)
    .u32(4, 'size', bytes.length)
    .u32(8, 'flags', flags);
  w.bytes.set(bytes, CONFIG_HEADER_SIZE);
  return w.bytes;
}

/** SEND_RARP payload: the 6-byte MAC in the first bytes of a u64. */
export function rarp(mac: Uint8Array): Uint8Array {
  if (mac.length !== 6) throw new RangeError(`MAC of ${mac.length} bytes, expected 6`);
  const out = new Uint8Array(U64_SIZE);
  out.set(mac);
  return out;
}

export interface Reply extends Header {
  /** View into the decoded buffer (not a copy). */
  payload: Uint8Array;
  /** Bytes the reply occupied: 12 + size. */
  length: number;
}

/**
 * Decode one complete reply at `offset` (as sent by the back-end: flags must be
 * exactly VERSION|REPLY). Throws ProtocolError when malformed or incomplete.
 */
export function decodeReply(bytes: Uint8Array, offset = 0): Reply {
  const h = decodeHeader(bytes, offset, 'reply');
  const have = bytes.length - offset - HEADER_SIZE;
  if (have < h.size) {
    throw new ProtocolError('truncated', `${reqName(h.request)} reply: payload ${have} of ${h.size} bytes`, h.request);
  }
  const start = offset + HEADER_SIZE;
  return { ...h, payload: bytes.subarray(start, start + h.size), length: HEADER_SIZE + h.size };
}

function replyBody(r: { request: number; payload: Uint8Array }, size: number): DataView {
  if (r.payload.length !== size) {
    throw new ProtocolError('size', `${reqName(r.request)} reply: payload is ${r.payload.length} bytes, expected ${size}`, r.request);
  }
  return viewOf(r.payload);
}

/** The u64 of a GET_* or REPLY_ACK reply. */
export function replyU64(r: { request: number; payload: Uint8Array }): bigint {
  return replyBody(r, U64_SIZE).getBigUint64(0, NATIVE_LE);
}

/** The vring state of a GET_VRING_BASE reply. */
export function replyVringState(r: { request: number; payload: Uint8Array }): { index: number; num: number } {
  const v = replyBody(r, VRING_STATE_SIZE);
  return { index: v.getUint32(0, NATIVE_LE), num: v.getUint32(4, NATIVE_LE) };
}
