// A popped descriptor chain, flattened into preallocated parallel typed
// arrays so the hot path never allocates. Segments are already translated:
// (region index, offset in that region's view, length), each proven to lie
// inside the view when it was recorded.

import type { GuestMemory } from './memory.js';

/**
 * QEMU's VIRTQUEUE_MAX_SIZE. A chain needing more segments is treated as bad:
 * Linux net drivers use at most MAX_SKB_FRAGS + 2 (19) per chain.
 */
export const DEFAULT_CHAIN_CAPACITY = 1024;

export class ChainScratch {
  readonly capacity: number;
  readonly region: Uint8Array;
  readonly offset: Float64Array; // views may exceed 2^32 bytes on newer Node
  readonly length: Uint32Array;
  readonly writable: Uint8Array;
  /** Number of segments (zero-length descriptors are not recorded). */
  count = 0;
  /**
   * Index of the first device-writable segment (== count if none). The walk
   * rejects readable-after-writable, so [0, firstWritable) are readable and
   * [firstWritable, count) writable.
   */
  firstWritable = 0;
  /** Total device-readable bytes. */
  readable = 0;
  /** Total device-writable bytes. */
  writableBytes = 0;
  /** Head descriptor index of the chain (for pushUsed). */
  head = -1;
  /** Memory the segments refer to (set by popChain). */
  mem: GuestMemory | null = null;

  constructor(capacity: number = DEFAULT_CHAIN_CAPACITY) {
    if (!Number.isInteger(capacity) || capacity < 1 || capacity > 65536) {
      throw new RangeError(`chain capacity ${capacity} not in 1..65536`);
    }
    this.capacity = capacity;
    this.region = new Uint8Array(capacity);
    this.offset = new Float64Array(capacity);
    this.length = new Uint32Array(capacity);
    this.writable = new Uint8Array(capacity);
  }

  reset(): void {
    this.count = 0;
    this.firstWritable = 0;
    this.readable = 0;
    this.writableBytes = 0;
    this.head = -1;
  }
}

// Why a chain was rejected (SplitQueue.lastBadReason). A rejected chain is
// returned to the guest as used with len 0 and counted in badChains.
export const CHAIN_OK = 0;
export const BAD_NEXT_RANGE = 1; // next >= table size
export const BAD_LOOP = 2; // more descriptors than the table holds
export const BAD_ADDR = 3; // buffer not (fully) inside guest memory
export const BAD_INDIRECT_NOT_NEGOTIATED = 4;
export const BAD_INDIRECT_NESTED = 5;
export const BAD_INDIRECT_WITH_NEXT = 6;
export const BAD_INDIRECT_LEN = 7; // 0 or not a multiple of 16
export const BAD_INDIRECT_ADDR = 8; // table not inside one region
export const BAD_ORDER = 9; // device-readable after device-writable
export const BAD_TOO_MANY_SEGMENTS = 10; // exceeds ChainScratch.capacity
export const BAD_TOO_LONG = 11; // total length > 2^32 - 1
export const BAD_SHORT_RX = 12; // net: MRG_RXBUF buffer smaller than the header

// Why a queue was marked broken (SplitQueue.brokenReason). A broken queue is
// not processed again until the control plane re-initialises it.
export const BROKEN_AVAIL_IDX = 1; // avail.idx moved by more than the queue size
export const BROKEN_HEAD = 2; // avail ring entry >= queue size
