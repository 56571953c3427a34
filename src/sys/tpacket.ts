// The byte layout of AF_PACKET's mmap'ed TPACKET_V2 rings (linux/if_packet.h),
// as pure functions over a view of the ring: geometry, reading an RX slot the
// kernel filled, writing a TX slot for it to send. No syscalls here (those are
// in packet.ts), so all of it is unit-tested on byte fixtures. The ring's
// contents are shared with the kernel and read as untrusted input anyway:
// every offset and length from a slot header is checked against the slot.

/** struct tpacket2_hdr fields (byte offsets; tp_status is at 0). */
const TP_LEN = 4;
const TP_SNAPLEN = 8;
const TP_MAC = 12;
const TP_VLAN_TCI = 24;
const TP_VLAN_TPID = 26;
/** TPACKET2_HDRLEN: the aligned header plus a struct sockaddr_ll. */
const TPACKET2_HDRLEN = 32 + 20;
/** Where TX frame data starts in a slot (TPACKET2_HDRLEN - sizeof(sockaddr_ll), no PACKET_TX_HAS_OFF). */
export const TX_DATA_OFFSET = 32;
/** Where the kernel puts an Ethernet frame in an RX slot: TPACKET_ALIGN(HDRLEN + 16) - 14 (plus the vnet header's size with PACKET_VNET_HDR). */
export const RX_MAC_OFFSET = 66;
/** struct virtio_net_hdr as PACKET_VNET_HDR puts it before each frame (RX: right before the MAC header; TX: before the frame data). */
export const PACKET_VNET_LEN = 10;

// tp_status bits.
export const TP_STATUS_KERNEL = 0;
export const TP_STATUS_USER = 1;
export const TP_STATUS_COPY = 2;
export const TP_STATUS_VLAN_VALID = 0x10;
export const TP_STATUS_VLAN_TPID_VALID = 0x40;
export const TP_STATUS_SEND_REQUEST = 1;

const ETH_MIN = 14;
const ETH_VLAN = 0x8100;
const PAGE = 4096;

export interface RingGeometry {
  /** Bytes per block (a multiple of the page size, a multiple of frameSize). */
  blockSize: number;
  blockCount: number;
  /** Bytes per slot (a power of two, 16-aligned as TPACKET_ALIGN wants). */
  frameSize: number;
  frameCount: number;
}

/**
 * A ring whose slots hold a frame of `maxFrame` bytes (Ethernet header
 * included, plus a VLAN tag) in about `bytes` of memory, at least `minFrames`
 * slots. Slots are powers of two so every block holds whole slots and a
 * slot's offset is index * frameSize. `vnet`: the bytes of virtio_net_hdr
 * each slot carries too (PACKET_VNET_HDR), 0 without.
 */
export function ringGeometry(maxFrame: number, bytes: number, minFrames = 64, vnet = 0): RingGeometry {
  if (!(Number.isInteger(maxFrame) && maxFrame >= ETH_MIN && maxFrame <= 65535)) throw new RangeError(`frame size ${maxFrame} out of range`);
  let frameSize = 256;
  while (frameSize < RX_MAC_OFFSET + vnet + maxFrame + 4) frameSize *= 2;
  const blockSize = Math.max(frameSize, 16 * PAGE);
  const perBlock = blockSize / frameSize;
  const blockCount = Math.max(1, Math.ceil(Math.max(bytes / blockSize, minFrames / perBlock)));
  return { blockSize, blockCount, frameSize, frameCount: blockCount * perBlock };
}

/** struct tpacket_req for PACKET_RX_RING / PACKET_TX_RING. */
export function encodeTpacketReq(g: RingGeometry): Buffer {
  const b = Buffer.alloc(16);
  b.writeUInt32LE(g.blockSize, 0);
  b.writeUInt32LE(g.blockCount, 4);
  b.writeUInt32LE(g.frameSize, 8);
  b.writeUInt32LE(g.frameCount, 12);
  return b;
}

/** A frame read from an RX slot: where it lies in the ring view, and its VLAN tag if the kernel took it off. */
export interface RxFrame {
  off: number;
  len: number;
  /** TCI of a tag the kernel stripped (to put back), or -1. */
  vlanTci: number;
  vlanTpid: number;
  /** Offset of the frame's virtio_net_hdr (PACKET_VNET_HDR), or -1. */
  hdr: number;
}

// rxSlot() results besides RX_FRAME.
export const RX_FRAME = 0;
/** The slot is still the kernel's: nothing more to read. */
export const RX_EMPTY = 1;
/** The slot is ours but holds no usable frame (truncated, out of bounds, too short): release it and count a drop. */
export const RX_BAD = 2;
/**
 * The frame was bigger than the slot (a GSO skb): the slot holds it cut, and
 * the kernel queued it whole on the socket as well (TP_STATUS_COPY, with
 * PACKET_COPY_THRESH set): read it from there, then release the slot. `out`
 * has its VLAN tag only.
 */
export const RX_COPY = 3;

/**
 * Reads the slot at `slot` (byte offset in `dv`, `frameSize` bytes) into `out`.
 * `status` is the slot's tp_status as the caller loaded it (with acquire
 * semantics, before reading anything else of the slot). `vnet`: the size of
 * the virtio_net_hdr right before the frame (PACKET_VNET_HDR), or 0.
 */
export function rxSlot(dv: DataView, slot: number, frameSize: number, status: number, out: RxFrame, vnet = 0): number {
  if ((status & TP_STATUS_USER) === 0) return RX_EMPTY;
  if (status & TP_STATUS_VLAN_VALID) {
    out.vlanTci = dv.getUint16(slot + TP_VLAN_TCI, true);
    const tpid = status & TP_STATUS_VLAN_TPID_VALID ? dv.getUint16(slot + TP_VLAN_TPID, true) : 0;
    out.vlanTpid = tpid === 0 ? ETH_VLAN : tpid;
  } else {
    out.vlanTci = -1;
    out.vlanTpid = 0;
  }
  if (status & TP_STATUS_COPY) return RX_COPY;
  const len = dv.getUint32(slot + TP_LEN, true);
  const snap = dv.getUint32(slot + TP_SNAPLEN, true);
  const mac = dv.getUint16(slot + TP_MAC, true);
  // A frame cut to the slot (snaplen < len: it was bigger than the ring's
  // slots) is not delivered in part.
  if (snap !== len || snap < ETH_MIN || mac < TPACKET2_HDRLEN + vnet || mac > frameSize || snap > frameSize - mac) return RX_BAD;
  out.off = slot + mac;
  out.hdr = vnet === 0 ? -1 : slot + mac - vnet;
  out.len = snap;
  return RX_FRAME;
}

/**
 * The frame of `f` with its stripped VLAN tag put back after the MACs, into
 * `dst` from 0; returns its length, or -1 when it does not fit.
 */
export function reinsertVlan(ring: Uint8Array, f: RxFrame, dst: Uint8Array): number {
  const len = f.len + 4;
  if (len > dst.length) return -1;
  dst.set(ring.subarray(f.off, f.off + 12), 0);
  dst[12] = f.vlanTpid >> 8;
  dst[13] = f.vlanTpid & 0xff;
  dst[14] = f.vlanTci >> 8;
  dst[15] = f.vlanTci & 0xff;
  dst.set(ring.subarray(f.off + 12, f.off + f.len), 16);
  return len;
}

/** The largest frame a TX slot of `frameSize` bytes carries (after a `vnet`-byte header). */
export const txCapacity = (frameSize: number, vnet = 0): number => frameSize - TX_DATA_OFFSET - vnet;

/** Fills in the header of TX slot `slot` for a frame of `len` bytes already written at slot + TX_DATA_OFFSET (status is the caller's, last). */
export function txSlotHeader(dv: DataView, slot: number, len: number): void {
  dv.setUint32(slot + TP_LEN, len, true);
  dv.setUint32(slot + TP_SNAPLEN, len, true);
}
