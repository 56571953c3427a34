// Decoding of vhost-user headers and front-end requests. Pure: no I/O, never
// closes an fd. Everything here treats the peer as hostile: each size, count
// and value is checked before anything else in the process relies on it.
import {
  CONFIG_HEADER_SIZE, HEADER_SIZE, HdrFlag, INFLIGHT_SIZE, IOTLB_MSG_SIZE, LOG_SIZE,
  MAX_CONFIG_SIZE, MAX_MEM_TABLE_REGIONS, MAX_PAYLOAD_SIZE, MEM_REGION_SIZE,
  MEM_REG_MSG_SIZE, MEM_TABLE_HEADER_SIZE, ProtocolError, Req, U64_SIZE, VRING_ADDR_F_LOG,
  VRING_ADDR_SIZE, VRING_AVAIL_ALIGN, VRING_DESC_ALIGN, VRING_INDEX_MASK, VRING_NOFD_MASK,
  VRING_STATE_SIZE, VRING_USED_ALIGN, reqName, type ProtocolErrorReason,
} from './messages.js';
import type { MemRegion, NoBodyKind, Request, VringFdKind } from './types.js';
import { NATIVE_LE, U64_MAX, hex64, viewOf } from './wire.js';

export interface Header {
  request: number;
  flags: number;
  /** Payload length that follows the 12-byte header (<= MAX_PAYLOAD_SIZE). */
  size: number;
}

/** Which side wrote the message: requests come from the front-end, replies
 *  (on the same socket) from the back-end. */
export type Direction = 'request' | 'reply';

/**
 * Check header flags. Version must be 1. Bits 4-31 are undefined by the spec;
 * rejecting them (as rust-vmm's header check does) turns a desynchronised
 * stream into an early, clear error instead of a garbage request. A request
 * must not carry REPLY; a reply must be exactly VERSION|REPLY, as QEMU's
 * vhost_user_read_header demands.
 */
function checkFlags(flags: number, direction: Direction, request: number): void {
  const name = reqName(request);
  const version = flags & HdrFlag.VERSION_MASK;
  if (version !== HdrFlag.VERSION) {
    throw new ProtocolError('version', `${name}: header version ${version}, expected 1`, request);
  }
  if ((flags & ~HdrFlag.KNOWN_MASK) !== 0) {
    throw new ProtocolError('flags', `${name}: undefined header flag bits in 0x${(flags >>> 0).toString(16)}`, request);
  }
  if (direction === 'request') {
    if (flags & HdrFlag.REPLY) throw new ProtocolError('flags', `${name}: REPLY flag set on a request`, request);
  } else if (flags !== (HdrFlag.VERSION | HdrFlag.REPLY)) {
    throw new ProtocolError('flags', `${name}: reply flags 0x${flags.toString(16)}, expected 0x5`, request);
  }
}

/**
 * Decode and validate the 12-byte header at `offset`. Throws ProtocolError for
 * fewer than 12 bytes, a bad version or flags, or `size` > MAX_PAYLOAD_SIZE:
 * the size is the peer's word, so it is capped before anyone allocates for it.
 */
export function decodeHeader(bytes: Uint8Array, offset = 0, direction: Direction = 'request'): Header {
  if (!Number.isInteger(offset) || offset < 0 || offset > bytes.length) {
    throw new RangeError(`header offset ${offset} outside a ${bytes.length}-byte buffer`);
  }
  if (bytes.length - offset < HEADER_SIZE) {
    throw new ProtocolError('truncated', `header needs ${HEADER_SIZE} bytes, have ${bytes.length - offset}`);
  }
  const v = new DataView(bytes.buffer, bytes.byteOffset + offset, HEADER_SIZE);
  const request = v.getUint32(0, NATIVE_LE);
  const flags = v.getUint32(4, NATIVE_LE);
  const size = v.getUint32(8, NATIVE_LE);
  checkFlags(flags, direction, request);
  if (size > MAX_PAYLOAD_SIZE) {
    throw new ProtocolError('oversize', `${reqName(request)}: payload size ${size} exceeds ${MAX_PAYLOAD_SIZE}`, request);
  }
  return { request, flags, size };
}

/** Cursor over one request's payload and fds; every failure names the request. */
class Body {
  private readonly v: DataView;
  readonly name: string;
  constructor(readonly request: number, readonly p: Uint8Array, readonly fds: readonly number[]) {
    this.v = viewOf(p);
    this.name = reqName(request);
  }
  fail(reason: ProtocolErrorReason, what: string): never {
    throw new ProtocolError(reason, `${this.name}: ${what}`, this.request);
  }
  size(n: number): void {
    if (this.p.length !== n) this.fail('size', `payload is ${this.p.length} bytes, expected ${n}`);
  }
  atLeast(n: number): void {
    if (this.p.length < n) this.fail('size', `payload is ${this.p.length} bytes, expected at least ${n}`);
  }
  fdCount(n: number): void {
    if (this.fds.length !== n) this.fail('fds', `${this.fds.length} fd(s) attached, expected ${n}`);
  }
  u8(off: number): number {
    return this.v.getUint8(off);
  }
  u16(off: number): number {
    return this.v.getUint16(off, NATIVE_LE);
  }
  u32(off: number): number {
    return this.v.getUint32(off, NATIVE_LE);
  }
  u64(off: number): bigint {
    return this.v.getBigUint64(off, NATIVE_LE);
  }
  /** Range [base, base+len) must end at or below 2^64 - 1, so `base + len` fits a u64. */
  noWrap(what: string, base: bigint, len: bigint): void {
    if (base + len > U64_MAX) this.fail('overflow', `${what} ${hex64(base)} + ${hex64(len)} wraps past 2^64`);
  }
  region(off: number, what: string, mmapMatters: boolean): MemRegion {
    const r: MemRegion = {
      guestPhysAddr: this.u64(off),
      memorySize: this.u64(off + 8),
      userspaceAddr: this.u64(off + 16),
      mmapOffset: this.u64(off + 24),
    };
    if (r.memorySize === 0n) this.fail('value', `${what} has size 0`);
    this.noWrap(`${what} guest_phys_addr`, r.guestPhysAddr, r.memorySize);
    this.noWrap(`${what} userspace_addr`, r.userspaceAddr, r.memorySize);
    if (mmapMatters) this.noWrap(`${what} mmap_offset`, r.mmapOffset, r.memorySize);
    return r;
  }
  /** A u32 field that the spec restricts to 0 or 1. */
  bool(off: number, what: string): boolean {
    const n = this.u32(off);
    if (n > 1) this.fail('value', `${what} ${n}, expected 0 or 1`);
    return n === 1;
  }
}

/**
 * Validate and decode one front-end request whose header was already checked
 * by decodeHeader. `fds` are those that arrived with the message.
 *
 * Ownership: on success the returned Request owns every fd in `fds` (see
 * {@link requestFds}). On a thrown ProtocolError this function has closed
 * nothing; THE CALLER MUST CLOSE EVERY FD IN `fds`, or a hostile peer can
 * exhaust our descriptor table by sending malformed messages with fds.
 *
 * Ids outside Req decode as `{ kind: 'UNKNOWN' }` (only the flags are
 * checked); the caller decides whether to send an error reply or close.
 */
export function decodeRequest(request: number, flags: number, payload: Uint8Array, fds: readonly number[]): Request {
  checkFlags(flags, 'request', request);
  const needReply = (flags & HdrFlag.NEED_REPLY) !== 0;
  const b = new Body(request, payload, fds);
  switch (request) {
    case Req.GET_FEATURES: case Req.SET_OWNER: case Req.RESET_OWNER: case Req.GET_PROTOCOL_FEATURES:
    case Req.GET_QUEUE_NUM: case Req.RESET_DEVICE: case Req.GET_MAX_MEM_SLOTS: case Req.GET_STATUS:
      b.size(0);
      b.fdCount(0);
      return { kind: b.name as NoBodyKind, needReply };

    case Req.SET_FEATURES: case Req.SET_PROTOCOL_FEATURES:
      b.size(U64_SIZE);
      b.fdCount(0);
      return { kind: request === Req.SET_FEATURES ? 'SET_FEATURES' : 'SET_PROTOCOL_FEATURES', needReply, features: b.u64(0) };

    case Req.SET_MEM_TABLE: {
      b.atLeast(MEM_TABLE_HEADER_SIZE);
      const n = b.u32(0); // the u32 after it is padding
      if (n < 1 || n > MAX_MEM_TABLE_REGIONS) b.fail('value', `nregions ${n}, expected 1..${MAX_MEM_TABLE_REGIONS}`);
      // QEMU, DPDK virtio-user and rust-vmm all send exactly the used regions.
      b.size(MEM_TABLE_HEADER_SIZE + n * MEM_REGION_SIZE);
      b.fdCount(n); // one fd per region, same order
      const regions = [];
      for (let i = 0; i < n; i++) {
        const r = b.region(MEM_TABLE_HEADER_SIZE + i * MEM_REGION_SIZE, `region ${i}`, true);
        regions.push({ ...r, fd: fds[i]! });
      }
      return { kind: 'SET_MEM_TABLE', needReply, regions };
    }

    case Req.SET_LOG_BASE: {
      // QEMU sends the log fd only with LOG_SHMFD; without it the back-end has no
      // way to reach the log, so an fd-less SET_LOG_BASE is refused here.
      b.size(LOG_SIZE);
      b.fdCount(1);
      const mmapSize = b.u64(0);
      const mmapOffset = b.u64(8);
      if (mmapSize === 0n) b.fail('value', 'log mmap_size is 0');
      b.noWrap('log mmap_offset', mmapOffset, mmapSize);
      return { kind: 'SET_LOG_BASE', needReply, mmapSize, mmapOffset, fd: fds[0]! };
    }

    case Req.SET_LOG_FD: case Req.SET_BACKEND_REQ_FD:
      b.size(0);
      b.fdCount(1);
      return { kind: request === Req.SET_LOG_FD ? 'SET_LOG_FD' : 'SET_BACKEND_REQ_FD', needReply, fd: fds[0]! };

    case Req.SET_VRING_NUM: case Req.SET_VRING_BASE:
      // num is not range-checked: valid sizes depend on negotiated features
      // (power of two for split rings only) and, for packed rings, QEMU packs
      // the avail and used wrap counters into SET_VRING_BASE's 32 bits.
      b.size(VRING_STATE_SIZE);
      b.fdCount(0);
      return {
        kind: request === Req.SET_VRING_NUM ? 'SET_VRING_NUM' : 'SET_VRING_BASE',
        needReply, index: b.u32(0), num: b.u32(4),
      };

    case Req.GET_VRING_BASE:
      b.size(VRING_STATE_SIZE); // num is ignored by the spec
      b.fdCount(0);
      return { kind: 'GET_VRING_BASE', needReply, index: b.u32(0) };

    case Req.SET_VRING_ADDR: {
      b.size(VRING_ADDR_SIZE);
      b.fdCount(0);
      const index = b.u32(0);
      const flags = b.u32(4);
      // Wire order is desc, USED, avail (struct vhost_vring_addr), not the
      // desc/avail/used order of the virtio spec.
      const desc = b.u64(8);
      const used = b.u64(16);
      const avail = b.u64(24);
      const log = b.u64(32);
      if (flags & ~VRING_ADDR_F_LOG) b.fail('value', `undefined vring flags 0x${flags.toString(16)}`);
      // Same checks as the kernel's vhost_vring_set_addr, plus the virtio
      // 16-byte descriptor table alignment; later layers lay typed-array views
      // over these rings and need them aligned.
      if (desc % BigInt(VRING_DESC_ALIGN) !== 0n) b.fail('value', `desc ${hex64(desc)} not ${VRING_DESC_ALIGN}-byte aligned`);
      if (used % BigInt(VRING_USED_ALIGN) !== 0n) b.fail('value', `used ${hex64(used)} not ${VRING_USED_ALIGN}-byte aligned`);
      if (avail % BigInt(VRING_AVAIL_ALIGN) !== 0n) b.fail('value', `avail ${hex64(avail)} not ${VRING_AVAIL_ALIGN}-byte aligned`);
      if (log % BigInt(VRING_USED_ALIGN) !== 0n) b.fail('value', `log ${hex64(log)} not ${VRING_USED_ALIGN}-byte aligned`);
      return { kind: 'SET_VRING_ADDR', needReply, index, flags, desc, used, avail, log };
    }

    case Req.SET_VRING_KICK: case Req.SET_VRING_CALL: case Req.SET_VRING_ERR: {
      b.size(U64_SIZE);
      const v = b.u64(0);
      // QEMU and DPDK set only bits 0-8; anything above is not ours to guess at.
      if (v & ~BigInt(VRING_INDEX_MASK | VRING_NOFD_MASK)) b.fail('value', `undefined bits in ${hex64(v)}`);
      const kind = b.name as VringFdKind;
      const index = Number(v & BigInt(VRING_INDEX_MASK));
      if (v & BigInt(VRING_NOFD_MASK)) {
        // NOFD means "no fd in the ancillary data"; one arriving anyway is a
        // confused peer (libvhost-user silently closes it, we refuse).
        b.fdCount(0);
        return { kind, needReply, index, nofd: true };
      }
      b.fdCount(1);
      return { kind, needReply, index, nofd: false, fd: fds[0]! };
    }

    case Req.SET_VRING_ENABLE:
      b.size(VRING_STATE_SIZE);
      b.fdCount(0);
      return { kind: 'SET_VRING_ENABLE', needReply, index: b.u32(0), enable: b.bool(4, 'enable') };

    case Req.SET_VRING_ENDIAN:
      b.size(VRING_STATE_SIZE);
      b.fdCount(0);
      // num: 0 little-endian, 1 big-endian, "other values are invalid".
      return { kind: 'SET_VRING_ENDIAN', needReply, index: b.u32(0), bigEndian: b.bool(4, 'endianness') };

    case Req.SEND_RARP:
      b.size(U64_SIZE); // the MAC is the first 6 bytes of a u64
      b.fdCount(0);
      return { kind: 'SEND_RARP', needReply, mac: payload.slice(0, 6) };

    case Req.NET_SET_MTU:
      b.size(U64_SIZE);
      b.fdCount(0);
      return { kind: 'NET_SET_MTU', needReply, mtu: b.u64(0) };

    case Req.SET_STATUS: {
      b.size(U64_SIZE);
      b.fdCount(0);
      const v = b.u64(0);
      if (v > 0xffn) b.fail('value', `device status ${hex64(v)} does not fit the virtio u8 status`);
      return { kind: 'SET_STATUS', needReply, status: Number(v) };
    }

    case Req.GET_CONFIG: case Req.SET_CONFIG: {
      b.atLeast(CONFIG_HEADER_SIZE);
      const offset = b.u32(0);
      const size = b.u32(4);
      const flags = b.u32(8);
      if (size > MAX_CONFIG_SIZE) b.fail('value', `config size ${size} exceeds ${MAX_CONFIG_SIZE}`);
      // QEMU sends 12 + size for both (GET's data area is zero-filled).
      b.size(CONFIG_HEADER_SIZE + size);
      b.fdCount(0);
      if (offset + size > MAX_CONFIG_SIZE) b.fail('value', `config range ${offset}+${size} beyond ${MAX_CONFIG_SIZE}`);
      // 0: writable fields, 1: live migration; nothing else is defined.
      if (flags > 1) b.fail('value', `config flags ${flags}, expected 0 or 1`);
      if (request === Req.GET_CONFIG) return { kind: 'GET_CONFIG', needReply, offset, size, flags };
      return { kind: 'SET_CONFIG', needReply, offset, flags, data: payload.slice(CONFIG_HEADER_SIZE) };
    }

    case Req.GET_INFLIGHT_FD: case Req.SET_INFLIGHT_FD: {
      // We never offer INFLIGHT_SHMFD; decoded only so the device can refuse
      // cleanly (and close SET_INFLIGHT_FD's fd) instead of dropping the link.
      b.size(INFLIGHT_SIZE);
      const base = { needReply, mmapSize: b.u64(0), mmapOffset: b.u64(8), numQueues: b.u16(16), queueSize: b.u16(18) };
      if (request === Req.GET_INFLIGHT_FD) {
        b.fdCount(0);
        return { kind: 'GET_INFLIGHT_FD', ...base };
      }
      b.fdCount(1);
      return { kind: 'SET_INFLIGHT_FD', ...base, fd: fds[0]! };
    }

    case Req.IOTLB_MSG: {
      // Only sent with ACCESS_PLATFORM, which we do not offer; decoded so the
      // device can reply non-zero as the spec asks.
      b.size(IOTLB_MSG_SIZE);
      b.fdCount(0);
      return { kind: 'IOTLB_MSG', needReply, iova: b.u64(0), size: b.u64(8), uaddr: b.u64(16), perm: b.u8(24), type: b.u8(25) };
    }

    case Req.ADD_MEM_REG:
      b.size(MEM_REG_MSG_SIZE); // u64 padding, then one region
      b.fdCount(1);
      return { kind: 'ADD_MEM_REG', needReply, region: b.region(8, 'region', true), fd: fds[0]! };

    case Req.REM_MEM_REG: {
      b.size(MEM_REG_MSG_SIZE);
      // The spec: no fd SHOULD be sent, but "for compatibility with existing
      // incorrect implementations" (older QEMU sent one) a back-end MAY accept
      // one and MUST close it unused: it is handed back for the caller to close.
      if (fds.length > 1) b.fdCount(1);
      // mmap_offset is ignored for removal, so it is not range-checked.
      const region = b.region(8, 'region', false);
      return fds.length === 1
        ? { kind: 'REM_MEM_REG', needReply, region, fd: fds[0]! }
        : { kind: 'REM_MEM_REG', needReply, region };
    }

    default:
      return { kind: 'UNKNOWN', needReply, request, payload: payload.slice(), fds: [...fds] };
  }
}

/** Every fd a decoded request owns: close these when refusing or done with it. */
export function requestFds(req: Request): number[] {
  switch (req.kind) {
    case 'SET_MEM_TABLE': return req.regions.map((r) => r.fd);
    case 'UNKNOWN': return [...req.fds];
    default: return 'fd' in req && req.fd !== undefined ? [req.fd] : [];
  }
}
