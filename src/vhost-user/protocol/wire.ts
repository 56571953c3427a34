// Byte-level helpers shared by the decoders and encoders of this directory.
import { HEADER_SIZE, MAX_PAYLOAD_SIZE } from './messages.js';

/**
 * The spec says "All numbers are in the machine native byte order" (both ends
 * share one host), so follow the host rather than hard-coding little-endian:
 * on s390x a QEMU front-end writes big-endian headers.
 */
export const NATIVE_LE = new Uint8Array(new Uint16Array([1]).buffer)[0] === 1;

export const U32_MAX = 0xffff_ffff;
export const U64_MAX = (1n << 64n) - 1n;

/** Shared zero-length payload: nothing can be written through it. */
export const EMPTY = new Uint8Array(0);

export function viewOf(bytes: Uint8Array): DataView {
  return new DataView(bytes.buffer, bytes.byteOffset, bytes.byteLength);
}

export function hex64(v: bigint): string {
  return `0x${v.toString(16)}`;
}

// Encoder arguments come from our own code, not the peer: a bad one is a bug
// here, so it is a RangeError rather than a ProtocolError.
export function checkU32(what: string, v: number): void {
  if (!Number.isInteger(v) || v < 0 || v > U32_MAX) throw new RangeError(`${what} ${v} is not a u32`);
}
function checkU64(what: string, v: bigint): void {
  if (typeof v !== 'bigint' || v < 0n || v > U64_MAX) throw new RangeError(`${what} ${String(v)} is not a u64`);
}

/**
 * A whole message (header + body) in one fresh buffer, ready for sendmsg.
 * `max` guards our own replies; the test front-end lifts it to build the
 * oversized messages a hostile peer could send.
 */
export function frame(request: number, flags: number, body: Uint8Array, max = MAX_PAYLOAD_SIZE): Uint8Array {
  checkU32('request', request);
  checkU32('flags', flags);
  if (body.length > max) throw new RangeError(`payload of ${body.length} bytes exceeds ${max}`);
  const out = new Uint8Array(HEADER_SIZE + body.length);
  const v = viewOf(out);
  v.setUint32(0, request, NATIVE_LE);
  v.setUint32(4, flags, NATIVE_LE);
  v.setUint32(8, body.length, NATIVE_LE);
  out.set(body, HEADER_SIZE);
  return out;
}

/** Little builder for fixed-layout payloads. */
export class Writer {
  readonly bytes: Uint8Array;
  private readonly v: DataView;
  constructor(size: number) {
    this.bytes = new Uint8Array(size);
    this.v = viewOf(this.bytes);
  }
  u32(off: number, what: string, value: number): this {
    checkU32(what, value);
    this.v.setUint32(off, value, NATIVE_LE);
    return this;
  }
  u64(off: number, what: string, value: bigint): this {
    checkU64(what, value);
    this.v.setBigUint64(off, value, NATIVE_LE);
    return this;
  }
}
