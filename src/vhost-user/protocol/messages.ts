// Constants of the vhost-user wire protocol (QEMU docs/interop/vhost-user.rst)
// and the virtio feature bits a net back-end negotiates over it. Pure data:
// no I/O, no dependencies, safe to import from anywhere.

/** Front-end -> back-end request ids that a virtio-net back-end may see. */
export const Req = {
  GET_FEATURES: 1,
  SET_FEATURES: 2,
  SET_OWNER: 3,
  RESET_OWNER: 4,
  SET_MEM_TABLE: 5,
  SET_LOG_BASE: 6,
  SET_LOG_FD: 7,
  SET_VRING_NUM: 8,
  SET_VRING_ADDR: 9,
  SET_VRING_BASE: 10,
  GET_VRING_BASE: 11,
  SET_VRING_KICK: 12,
  SET_VRING_CALL: 13,
  SET_VRING_ERR: 14,
  GET_PROTOCOL_FEATURES: 15,
  SET_PROTOCOL_FEATURES: 16,
  GET_QUEUE_NUM: 17,
  SET_VRING_ENABLE: 18,
  SEND_RARP: 19,
  NET_SET_MTU: 20,
  SET_BACKEND_REQ_FD: 21,
  IOTLB_MSG: 22,
  SET_VRING_ENDIAN: 23,
  GET_CONFIG: 24,
  SET_CONFIG: 25,
  GET_INFLIGHT_FD: 31,
  SET_INFLIGHT_FD: 32,
  RESET_DEVICE: 34,
  GET_MAX_MEM_SLOTS: 36,
  ADD_MEM_REG: 37,
  REM_MEM_REG: 38,
  SET_STATUS: 39,
  GET_STATUS: 40,
} as const;
export type ReqName = keyof typeof Req;

const NAMES = new Map<number, string>(Object.entries(Req).map(([k, v]) => [v, k]));
// Ids the spec defines for other device types or for features we never offer.
// They decode as UNKNOWN, but a log line saying POSTCOPY_ADVISE beats "28".
for (const [id, name] of [
  [26, 'CREATE_CRYPTO_SESSION'], [27, 'CLOSE_CRYPTO_SESSION'], [28, 'POSTCOPY_ADVISE'],
  [29, 'POSTCOPY_LISTEN'], [30, 'POSTCOPY_END'], [33, 'GPU_SET_SOCKET'], [35, 'VRING_KICK'],
  [41, 'GET_SHARED_OBJECT'], [42, 'SET_DEVICE_STATE_FD'], [43, 'CHECK_DEVICE_STATE'],
] as const) NAMES.set(id, name);

/** Human-readable name of a request id, for logs and error messages. */
export function reqName(id: number): string {
  return NAMES.get(id) ?? `UNKNOWN(${id})`;
}

/** Header `flags` bits. Bits 4-31 are undefined by the spec. */
export const HdrFlag = {
  VERSION: 0x1,
  VERSION_MASK: 0x3,
  REPLY: 0x4,
  NEED_REPLY: 0x8,
  /** Every bit the spec defines; anything outside is rejected (see codec.ts). */
  KNOWN_MASK: 0xf,
} as const;

// ---- sizes (bytes) ----
export const HEADER_SIZE = 12;
export const U64_SIZE = 8;
export const VRING_STATE_SIZE = 8;
/** index u32, flags u32, desc u64, used u64, avail u64, log u64 (no `size` field
 *  despite the spec's table: struct vhost_vring_addr has none). */
export const VRING_ADDR_SIZE = 40;
export const MEM_REGION_SIZE = 32;
export const MEM_TABLE_HEADER_SIZE = 8;
/** QEMU's VHOST_MEMORY_BASELINE_NREGIONS: the fd array of one message holds 8,
 *  so SET_MEM_TABLE never carries more regions than that. */
export const MAX_MEM_TABLE_REGIONS = 8;
/** padding u64 + one region: ADD_MEM_REG / REM_MEM_REG. */
export const MEM_REG_MSG_SIZE = 40;
export const LOG_SIZE = 16;
export const CONFIG_HEADER_SIZE = 12;
/** QEMU's VHOST_USER_MAX_CONFIG_SIZE. */
export const MAX_CONFIG_SIZE = 256;
/** struct vhost_iotlb_msg: 3 x u64 + 2 x u8, padded to u64 alignment. */
export const IOTLB_MSG_SIZE = 32;
/** VhostUserInflight: 2 x u64 + 2 x u16, padded to u64 alignment (QEMU and
 *  DPDK both send sizeof(), i.e. 24). */
export const INFLIGHT_SIZE = 24;

/**
 * Largest payload this back-end accepts: GET_CONFIG/SET_CONFIG with a full
 * 256-byte config space, 12 + 256 = 268. The next largest is SET_MEM_TABLE
 * with 8 regions, 8 + 8 x 32 = 264. Advertising GET_MAX_MEM_SLOTS = 32 does
 * not raise this: with CONFIGURE_MEM_SLOTS negotiated QEMU stops using
 * SET_MEM_TABLE and sends one 40-byte ADD_MEM_REG per region. QEMU's own cap
 * (sizeof its payload union, ~600 B) is larger only because of crypto and
 * other device messages a net back-end never receives.
 */
export const MAX_PAYLOAD_SIZE = CONFIG_HEADER_SIZE + MAX_CONFIG_SIZE;
/** QEMU attaches at most VHOST_MEMORY_BASELINE_NREGIONS fds to one message. */
export const MAX_FDS_PER_MESSAGE = 8;

// ---- vring ----
/** SET_VRING_KICK/CALL/ERR u64: bits 0-7 ring index, bit 8 "no fd". */
export const VRING_INDEX_MASK = 0xff;
const VRING_NOFD_BIT = 8;
export const VRING_NOFD_MASK = 1 << VRING_NOFD_BIT;
/** SET_VRING_ADDR flags: VHOST_VRING_F_LOG (bit 0) is the only defined flag. */
export const VRING_ADDR_F_LOG = 0x1;
/** Virtio 1.x "Virtqueue Part Alignment" (split: desc 16, avail 2, used 4;
 *  packed: desc 16, both event areas 4, so checking 2 for avail covers both). */
export const VRING_DESC_ALIGN = 16;
export const VRING_AVAIL_ALIGN = 2;
export const VRING_USED_ALIGN = 4;

/** Protocol feature bit numbers (GET/SET_PROTOCOL_FEATURES). */
export const ProtoFeature = {
  MQ: 0,
  LOG_SHMFD: 1,
  RARP: 2,
  REPLY_ACK: 3,
  NET_MTU: 4,
  BACKEND_REQ: 5,
  CROSS_ENDIAN: 6,
  CRYPTO_SESSION: 7,
  PAGEFAULT: 8,
  CONFIG: 9,
  BACKEND_SEND_FD: 10,
  HOST_NOTIFIER: 11,
  INFLIGHT_SHMFD: 12,
  RESET_DEVICE: 13,
  INBAND_NOTIFICATIONS: 14,
  CONFIGURE_MEM_SLOTS: 15,
  STATUS: 16,
} as const;

/** Virtio (device-independent and virtio-net) feature bit numbers for
 *  GET/SET_FEATURES, plus the two vhost-only bits 26 and 30. */
export const Feature = {
  CSUM: 0,
  GUEST_CSUM: 1,
  CTRL_GUEST_OFFLOADS: 2,
  MTU: 3,
  MAC: 5,
  GUEST_TSO4: 7,
  GUEST_TSO6: 8,
  GUEST_ECN: 9,
  GUEST_UFO: 10,
  HOST_TSO4: 11,
  HOST_TSO6: 12,
  HOST_ECN: 13,
  HOST_UFO: 14,
  MRG_RXBUF: 15,
  STATUS: 16,
  CTRL_VQ: 17,
  CTRL_RX: 18,
  CTRL_VLAN: 19,
  GUEST_ANNOUNCE: 21,
  MQ: 22,
  CTRL_MAC_ADDR: 23,
  NOTIFY_ON_EMPTY: 24,
  /** VHOST_F_LOG_ALL: dirty logging for migration. */
  LOG_ALL: 26,
  ANY_LAYOUT: 27,
  INDIRECT_DESC: 28,
  EVENT_IDX: 29,
  /** VHOST_USER_F_PROTOCOL_FEATURES (reuses the reserved virtio bit 30). */
  PROTOCOL_FEATURES: 30,
  VERSION_1: 32,
  ACCESS_PLATFORM: 33,
  RING_PACKED: 34,
  IN_ORDER: 35,
} as const;

/** 1 << bit as a u64 feature mask. */
export function featureBit(bit: number): bigint {
  return 1n << BigInt(bit);
}

/** Whether `mask` has feature `bit` set. */
export function hasFeature(mask: bigint, bit: number): boolean {
  return (mask & featureBit(bit)) !== 0n;
}

export type ProtocolErrorReason =
  | 'truncated' // fewer header bytes than 12
  | 'version' // header version bits are not 1
  | 'flags' // undefined header flag bits set, or REPLY/NEED_REPLY wrong for the direction
  | 'oversize' // header size above MAX_PAYLOAD_SIZE
  | 'size' // payload length wrong for the request
  | 'fds' // wrong number of fds for the request, or fds with no message to carry them
  | 'value' // a field holds a value the spec does not allow
  | 'overflow'; // a region or log range wraps past 2^64

/**
 * The peer sent something the protocol does not allow. Whoever catches it must
 * close every fd that came with the message (and, for MessageReader, drain the
 * reader) and normally close the connection: the stream cannot be trusted.
 */
export class ProtocolError extends Error {
  override readonly name = 'ProtocolError';
  constructor(
    readonly reason: ProtocolErrorReason,
    message: string,
    /** Request id the failure concerns, when a header had been read. */
    readonly request?: number,
  ) {
    super(message);
  }
}
