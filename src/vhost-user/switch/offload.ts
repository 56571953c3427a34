// virtio-net offload headers (spec 5.1.6): decoding, validation against the
// frame they describe, and what a receiver must have negotiated to take a
// frame as it is. Pure and allocation-free on the hot path; the software
// fallback (checksum completion, TCP segmentation) is in gso.ts.

export const F_NEEDS_CSUM = 1;
export const GSO_NONE = 0;
export const GSO_TCPV4 = 1;
export const GSO_UDP = 3;
export const GSO_TCPV6 = 4;
export const GSO_ECN = 0x80;

/** Software segmentation emits at most this many frames per GSO frame (a 64 KiB frame at MSS 256). */
const MAX_SEGMENTS = 256;
/** Header bytes a validation may look at (Ethernet + 2 VLAN tags + IPv6 with options + TCP with options). */
export const HEADER_PEEK = 320;

/** The fields of a struct virtio_net_hdr the switch acts on (num_buffers is per receiver). */
export class VnetHeader {
  flags = 0;
  gsoType = 0;
  hdrLen = 0;
  gsoSize = 0;
  csumStart = 0;
  csumOffset = 0;

  /** Reads the first 10 bytes of a header at b[off]. */
  read(b: Uint8Array, off: number): void {
    this.flags = b[off]!;
    this.gsoType = b[off + 1]!;
    this.hdrLen = b[off + 2]! | (b[off + 3]! << 8);
    this.gsoSize = b[off + 4]! | (b[off + 5]! << 8);
    this.csumStart = b[off + 6]! | (b[off + 7]! << 8);
    this.csumOffset = b[off + 8]! | (b[off + 9]! << 8);
  }

  /** Writes the 10 bytes back (for a receiver that takes the frame as it is). */
  write(b: Uint8Array, off: number): void {
    b[off] = this.flags & F_NEEDS_CSUM;
    b[off + 1] = this.gsoType;
    b[off + 2] = this.hdrLen & 0xff; b[off + 3] = this.hdrLen >>> 8;
    b[off + 4] = this.gsoSize & 0xff; b[off + 5] = this.gsoSize >>> 8;
    b[off + 6] = this.csumStart & 0xff; b[off + 7] = this.csumStart >>> 8;
    b[off + 8] = this.csumOffset & 0xff; b[off + 9] = this.csumOffset >>> 8;
  }

  /** Neither a partial checksum nor GSO: the frame is plain. */
  get plain(): boolean { return (this.flags & F_NEEDS_CSUM) === 0 && this.gsoType === GSO_NONE; }
}

/** Offload capabilities of one side, from its negotiated feature bits. */
export const CAN_CSUM = 1;
export const CAN_TSO4 = 2;
export const CAN_TSO6 = 4;
export const CAN_ECN = 8;
export const CAN_ALL = CAN_CSUM | CAN_TSO4 | CAN_TSO6 | CAN_ECN;

/** Where a validated frame's layers are (filled by validate()). */
export class FrameLayout {
  /** Offset of the IP header (after any VLAN tags). */
  l3 = 0;
  ipv6 = false;
  /** Offset of the TCP header (GSO frames). */
  l4 = 0;
  /** TCP header length (GSO frames). */
  l4Len = 0;
  /** End of the IP packet (an Ethernet pad after it is not payload). */
  end = 0;
  /** Segments a software segmentation makes (1 for non-GSO frames). */
  segments = 1;
}

// validate() results: 0 is fine, anything else is why the frame is dropped.
export const OFFLOAD_OK = 0;
export const BAD_GSO_TYPE = 1; // unknown type, UDP (not offered), ECN without TCP
export const BAD_GSO_SIZE = 2; // 0
export const BAD_HDR_LEN = 3; // beyond the frame
export const BAD_CSUM_RANGE = 4; // csum_start/csum_offset past the end
export const BAD_PACKET = 5; // not the IP/TCP packet the gso_type says, or inconsistent lengths
export const BAD_TOO_MANY_SEGMENTS = 6;
export const BAD_NOT_NEGOTIATED = 7; // the sender used an offload it did not negotiate

/**
 * The offloads (CAN_* bits) a header asks for: the sender must have
 * negotiated them (as CSUM/HOST_*), and a receiver must have them (as
 * GUEST_*) to take the frame as it is.
 */
export function needs(h: VnetHeader): number {
  let n = (h.flags & F_NEEDS_CSUM) !== 0 ? CAN_CSUM : 0;
  const base = h.gsoType & ~GSO_ECN;
  if (base === GSO_TCPV4) n |= CAN_TSO4;
  else if (base === GSO_TCPV6) n |= CAN_TSO6;
  if ((h.gsoType & GSO_ECN) !== 0) n |= CAN_ECN;
  return n;
}

const u16 = (b: Uint8Array, o: number): number => (b[o]! << 8) | b[o + 1]!;

/**
 * Checks header `h` against the frame whose first `avail` bytes are in b
 * (from offset 0) and whose full length is `len`: every offset and length
 * the header or the packet claims must lie inside the frame. For GSO frames
 * parses Ethernet (up to two VLAN tags), IPv4 or IPv6 (hop-by-hop and
 * destination options skipped) and TCP into `out`. Returns OFFLOAD_OK or a
 * BAD_* reason.
 */
export function validate(h: VnetHeader, b: Uint8Array, avail: number, len: number, out: FrameLayout): number {
  out.segments = 1;
  out.end = len;
  if ((h.flags & F_NEEDS_CSUM) !== 0 && h.csumStart + h.csumOffset + 2 > len) return BAD_CSUM_RANGE;
  const base = h.gsoType & ~GSO_ECN;
  if (base === GSO_NONE) return (h.gsoType & GSO_ECN) !== 0 ? BAD_GSO_TYPE : OFFLOAD_OK;
  if (base !== GSO_TCPV4 && base !== GSO_TCPV6) return BAD_GSO_TYPE;
  if (h.gsoSize === 0) return BAD_GSO_SIZE;
  if (h.hdrLen > len) return BAD_HDR_LEN;
  if (avail > len) avail = len;
  let l3 = 14;
  if (avail < l3) return BAD_PACKET;
  let type = u16(b, 12);
  for (let tags = 0; (type === 0x8100 || type === 0x88a8) && tags < 2; tags++) {
    if (avail < l3 + 4) return BAD_PACKET;
    type = u16(b, l3 + 2);
    l3 += 4;
  }
  let l4: number;
  let end: number;
  if (base === GSO_TCPV4) {
    if (type !== 0x0800 || avail < l3 + 20 || b[l3]! >>> 4 !== 4) return BAD_PACKET;
    const ihl = (b[l3]! & 15) * 4;
    if (ihl < 20 || avail < l3 + ihl || b[l3 + 9] !== 6) return BAD_PACKET;
    if ((u16(b, l3 + 6) & 0x3fff) !== 0) return BAD_PACKET; // a fragment
    end = l3 + u16(b, l3 + 2);
    if (end < l3 + ihl || end > len) return BAD_PACKET;
    l4 = l3 + ihl;
    out.ipv6 = false;
  } else {
    if (type !== 0x86dd || avail < l3 + 40 || b[l3]! >>> 4 !== 6) return BAD_PACKET;
    const plen = u16(b, l3 + 4);
    end = l3 + 40 + plen;
    if (plen === 0 || end > len) return BAD_PACKET; // 0: a jumbogram
    let nh = b[l3 + 6]!;
    l4 = l3 + 40;
    // Hop-by-hop and destination options: skipped (they do not change per segment).
    while (nh === 0 || nh === 60) {
      if (avail < l4 + 8) return BAD_PACKET;
      nh = b[l4]!;
      l4 += (b[l4 + 1]! + 1) * 8;
    }
    if (nh !== 6 || l4 > end) return BAD_PACKET;
    out.ipv6 = true;
  }
  if (avail < l4 + 20 || l4 + 20 > end) return BAD_PACKET;
  const thl = (b[l4 + 12]! >>> 4) * 4;
  if (thl < 20 || l4 + thl > end || avail < l4 + thl) return BAD_PACKET;
  // A partial checksum on a GSO frame must be the TCP one.
  if ((h.flags & F_NEEDS_CSUM) !== 0 && (h.csumStart !== l4 || h.csumOffset !== 16)) return BAD_CSUM_RANGE;
  const payload = end - l4 - thl;
  const segs = payload === 0 ? 1 : Math.ceil(payload / h.gsoSize);
  if (segs > MAX_SEGMENTS) return BAD_TOO_MANY_SEGMENTS;
  out.l3 = l3;
  out.l4 = l4;
  out.l4Len = thl;
  out.end = end;
  out.segments = segs;
  return OFFLOAD_OK;
}
