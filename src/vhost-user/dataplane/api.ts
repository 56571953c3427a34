// The contract between a port's control plane (main thread, one per
// vhost-user connection) and the data path (worker threads). Everything here
// is plain data: it crosses postMessage. fds are numbers valid process-wide;
// the control plane owns them and closes one only after the data path has
// acknowledged it no longer uses it (an fd number may be reused at once).

export interface RegionSpec {
  fd: number;
  guestPhysAddr: number;
  size: number;
  userAddr: number;
  mmapOffset: number;
}

export interface QueueSpec {
  size: number;
  /** Front-end virtual addresses (translated by the data path through userAddr). */
  desc: number;
  avail: number;
  used: number;
  lastAvail: number;
  eventIdx: boolean;
  indirect: boolean;
  mrgRxbuf: boolean;
  /** virtio-net header length: 12 (VERSION_1 or MRG_RXBUF) or 10. */
  hdrLen: number;
  kickFd: number;
  callFd: number;
  enabled: boolean;
  /** LOG_ALL negotiated: log every write to guest memory in the port's dirty log. */
  logAll: boolean;
  /** Guest-physical address of the used ring for the log (SET_VRING_ADDR with VRING_F_LOG), or -1. */
  logUsedGpa: number;
  /** Offloads the guest may use on frames it sends (CAN_* of switch/offload.ts: CSUM, HOST_TSO4/6, HOST_ECN). */
  sendOffloads: number;
  /** Offloads the guest takes on frames it receives (GUEST_CSUM, GUEST_TSO4/6, GUEST_ECN). */
  recvOffloads: number;
}

/** The dirty log shared with the front-end (SET_LOG_BASE): mmap `size` bytes of fd at `offset`. */
export interface LogSpec {
  fd: number;
  size: number;
  offset: number;
}

/** What a port's data path does; implemented by the worker pool client. */
export interface PortDataplane {
  setMemory(regions: RegionSpec[]): Promise<void>;
  startQueue(q: number, spec: QueueSpec): Promise<void>;
  /** Stops the ring and returns the next avail index to process (GET_VRING_BASE). */
  stopQueue(q: number): Promise<number>;
  setCall(q: number, fd: number): Promise<void>;
  setEnabled(q: number, enabled: boolean): Promise<void>;
  /** Sends a frame out of the port's host side as if the guest had sent it (SEND_RARP). */
  injectFromGuest(frame: Uint8Array): Promise<void>;
  /** Maps the dirty log (the fd stays the caller's to close once this resolves). */
  setLog(log: LogSpec): Promise<void>;
  /** Stops every queue and forgets the memory table. */
  reset(): Promise<void>;
  stats(): PortStats;
}

export interface PortStats {
  txFrames: number;
  /** Of txFrames, those the native fast path moved (virtq/native.ts). */
  txNative: number;
  rxFrames: number;
  txDropped: number;
  rxDropped: number;
  badChains: number;
  brokenQueues: number;
  /** GSO frames delivered as they are to a receiver that negotiated their offloads (counted on the sender). */
  gsoPassed: number;
  /** GSO frames the switch cut into segments for a receiver (or the uplink) without TSO. */
  gsoSegmented: number;
  /** Partial checksums the switch completed for a receiver without GUEST_CSUM. */
  csumCompleted: number;
  /** Frames dropped for an offload header that lies about the frame or was not negotiated. */
  badOffload: number;
}

export function zeroStats(): PortStats {
  return {
    txFrames: 0, txNative: 0, rxFrames: 0, txDropped: 0, rxDropped: 0, badChains: 0, brokenQueues: 0,
    gsoPassed: 0, gsoSegmented: 0, csumCompleted: 0, badOffload: 0,
  };
}
