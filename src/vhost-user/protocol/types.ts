// Decoded shapes of front-end requests. Addresses, sizes and feature masks are
// u64 on the wire (feature masks use bits >= 32), so they stay bigint; this is
// the control path, and the memory layer converts what it maps.

/** One entry of a memory table (guest-physical range backed by an fd). */
export interface MemRegion {
  guestPhysAddr: bigint;
  memorySize: bigint;
  /** Front-end virtual address of the region; ring addresses refer to these. */
  userspaceAddr: bigint;
  /** Where the region starts within its fd. */
  mmapOffset: bigint;
}

/** A SET_MEM_TABLE region with the fd that arrived for it (same order). */
export interface MemRegionFd extends MemRegion {
  fd: number;
}

/** Requests with no payload and no fd. */
export type NoBodyKind =
  | 'GET_FEATURES'
  | 'SET_OWNER'
  | 'RESET_OWNER'
  | 'GET_PROTOCOL_FEATURES'
  | 'GET_QUEUE_NUM'
  | 'RESET_DEVICE'
  | 'GET_MAX_MEM_SLOTS'
  | 'GET_STATUS';

export type VringFdKind = 'SET_VRING_KICK' | 'SET_VRING_CALL' | 'SET_VRING_ERR';

export type RequestBody =
  | { kind: NoBodyKind }
  | { kind: 'SET_FEATURES' | 'SET_PROTOCOL_FEATURES'; features: bigint }
  | { kind: 'SET_MEM_TABLE'; regions: MemRegionFd[] }
  | { kind: 'SET_LOG_BASE'; mmapSize: bigint; mmapOffset: bigint; fd: number }
  | { kind: 'SET_LOG_FD' | 'SET_BACKEND_REQ_FD'; fd: number }
  | { kind: 'SET_VRING_NUM' | 'SET_VRING_BASE'; index: number; num: number }
  | { kind: 'GET_VRING_BASE'; index: number }
  | {
      kind: 'SET_VRING_ADDR';
      index: number;
      /** VRING_ADDR_F_LOG or 0. */
      flags: number;
      /** Front-end virtual addresses (match MemRegion.userspaceAddr). */
      desc: bigint;
      used: bigint;
      avail: bigint;
      /** log_guest_addr: guest-physical address of the used ring, for dirty logging. */
      log: bigint;
    }
  | { kind: VringFdKind; index: number; nofd: boolean; fd?: number }
  | { kind: 'SET_VRING_ENABLE'; index: number; enable: boolean }
  | { kind: 'SEND_RARP'; mac: Uint8Array }
  /** Raw u64: an out-of-range MTU gets a non-zero REPLY_ACK, not a closed socket. */
  | { kind: 'NET_SET_MTU'; mtu: bigint }
  | { kind: 'IOTLB_MSG'; iova: bigint; size: bigint; uaddr: bigint; perm: number; type: number }
  | { kind: 'SET_VRING_ENDIAN'; index: number; bigEndian: boolean }
  | { kind: 'GET_CONFIG'; offset: number; size: number; flags: number }
  | { kind: 'SET_CONFIG'; offset: number; flags: number; data: Uint8Array }
  | { kind: 'GET_INFLIGHT_FD'; mmapSize: bigint; mmapOffset: bigint; numQueues: number; queueSize: number }
  | {
      kind: 'SET_INFLIGHT_FD';
      mmapSize: bigint;
      mmapOffset: bigint;
      numQueues: number;
      queueSize: number;
      fd: number;
    }
  | { kind: 'ADD_MEM_REG'; region: MemRegion; fd: number }
  /** `fd`: old QEMU sent one; the spec says close it unused. */
  | { kind: 'REM_MEM_REG'; region: MemRegion; fd?: number }
  | { kind: 'SET_STATUS'; status: number }
  /** An id outside Req. The payload is a copy; `fds` are owned by the caller. */
  | { kind: 'UNKNOWN'; request: number; payload: Uint8Array; fds: number[] };

/** A validated front-end request. `needReply`: the NEED_REPLY header flag. */
export type Request = RequestBody & { needReply: boolean };
