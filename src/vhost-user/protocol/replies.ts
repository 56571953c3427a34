// Encoders for the back-end's replies. Each returns one fresh buffer holding
// header + body, so the socket layer can hand it to a single write.
import { CONFIG_HEADER_SIZE, HdrFlag, MAX_CONFIG_SIZE, Req, U64_SIZE, VRING_STATE_SIZE } from './messages.js';
import { EMPTY, Writer, checkU32, frame } from './wire.js';

/** Replies carry the request's id and flags VERSION|REPLY (QEMU accepts nothing else). */
const REPLY_FLAGS = HdrFlag.VERSION | HdrFlag.REPLY;

/** A reply with an arbitrary body (size = body length). */
function encodeReply(request: number, body: Uint8Array = EMPTY): Uint8Array {
  return frame(request, REPLY_FLAGS, body);
}

/** A u64 reply: GET_FEATURES, GET_PROTOCOL_FEATURES, GET_QUEUE_NUM, GET_MAX_MEM_SLOTS,
 *  GET_STATUS, and REPLY_ACK acknowledgements. */
export function encodeU64Reply(request: number, value: bigint): Uint8Array {
  return encodeReply(request, new Writer(U64_SIZE).u64(0, 'value', value).bytes);
}

/**
 * REPLY_ACK answer to a NEED_REPLY request without a reply body of its own:
 * "zero on success or non-zero on failure". QEMU only tests for non-zero.
 */
export function encodeAck(request: number, ok: boolean): Uint8Array {
  return encodeU64Reply(request, ok ? 0n : 1n);
}

/** A vring state reply (GET_VRING_BASE: index and the next avail index). */
export function encodeVringStateReply(request: number, index: number, num: number): Uint8Array {
  return encodeReply(request, new Writer(VRING_STATE_SIZE).u32(0, 'index', index).u32(4, 'num', num).bytes);
}

/**
 * GET_CONFIG reply echoing the request's layout: offset, size, flags, then the
 * config bytes. QEMU rejects a reply whose size differs from its request, so
 * `data.length` must equal the requested size.
 */
export function encodeConfigReply(offset: number, flags: number, data: Uint8Array): Uint8Array {
  checkU32('offset', offset);
  if (data.length > MAX_CONFIG_SIZE) throw new RangeError(`config data of ${data.length} bytes exceeds ${MAX_CONFIG_SIZE}`);
  const w = new Writer(CONFIG_HEADER_SIZE + data.length)
    .u32(0, 'offset', offset)
    .u32(4, 'size', data.length)
    .u32(8, 'flags', flags);
  w.bytes.set(data, CONFIG_HEADER_SIZE);
  return encodeReply(Req.GET_CONFIG, w.bytes);
}

/** The spec's GET_CONFIG failure signal: a reply with an empty payload. */
export function encodeConfigErrorReply(): Uint8Array {
  return encodeReply(Req.GET_CONFIG, EMPTY);
}
