// Software offloads for receivers that did not negotiate them: completes a
// partial checksum (VIRTIO_NET_HDR_F_NEEDS_CSUM) and cuts a TCP GSO frame
// into MSS-sized frames with their own IP and TCP headers and checksums,
// as a NIC's TSO would. Works on a flat copy of the frame, already checked
// by offload.validate(); pure apart from the emit callback.
import { dataViewOf } from '../virtq/copy.js';
import { FrameLayout, VnetHeader } from './offload.js';

/**
 * Ones'-complement sum of b[off, off+len) as big-endian 16-bit words, added
 * to `sum` (not folded). Reads 32 bits at a time: 2^16 = 1 modulo 0xffff, so
 * summing 32-bit words and folding later gives the same result; a double
 * holds 2^21 such words exactly, more than a 64 KiB frame has.
 */
function onesSum(b: Uint8Array, off: number, len: number, sum: number): number {
  const dv = dataViewOf(b);
  let s = sum;
  let i = off;
  const end4 = off + (len & ~3);
  while (i < end4) { s += dv.getUint32(i); i += 4; }
  if (len & 2) { s += dv.getUint16(i); i += 2; }
  if (len & 1) s += b[i]! << 8;
  return s;
}

/** Folds a sum to 16 bits and complements it. */
function foldComplement(sum: number): number {
  let s = sum;
  while (s > 0xffff) s = (s % 0x10000) + Math.floor(s / 0x10000);
  return ~s & 0xffff;
}

/**
 * NEEDS_CSUM: the sender left the sum of the pseudo-header in the checksum
 * field; the sum from csum_start to the end of the frame, complemented, goes
 * there (a result of 0 is sent as 0xffff, which UDP requires and TCP accepts).
 */
export function completeChecksum(b: Uint8Array, len: number, h: VnetHeader): void {
  const at = h.csumStart + h.csumOffset;
  const c = foldComplement(onesSum(b, h.csumStart, len - h.csumStart, 0)) || 0xffff;
  b[at] = c >>> 8;
  b[at + 1] = c & 0xff;
}

const TCP_FIN = 0x01;
const TCP_PSH = 0x08;
const TCP_CWR = 0x80;

/**
 * Cuts the TCP GSO frame b[0, len) (validated: `l` from validate()) into
 * segments of at most h.gsoSize payload bytes, built one after the other in
 * `scratch` (at least the frame's length) and handed to emit(scratch, len).
 * Every segment gets the headers of the original with: IPv4 total length,
 * id + i and header checksum, or IPv6 payload length; TCP sequence number +
 * offset, CWR only on the first, FIN and PSH only on the last, and a full
 * TCP checksum. Returns the segments emitted.
 */
export function segmentTcp(
  b: Uint8Array, l: FrameLayout, h: VnetHeader, scratch: Uint8Array, emit: (seg: Uint8Array, len: number) => void,
): number {
  const hdrEnd = l.l4 + l.l4Len;
  const payload = l.end - hdrEnd;
  const mss = h.gsoSize;
  const segs = l.segments;
  const l3 = l.l3;
  const l4 = l.l4;
  const seq0 = ((b[l4 + 4]! << 24) | (b[l4 + 5]! << 16) | (b[l4 + 6]! << 8) | b[l4 + 7]!) >>> 0;
  const flags0 = b[l4 + 13]!;
  const id0 = l.ipv6 ? 0 : (b[l3 + 4]! << 8) | b[l3 + 5]!;
  scratch.set(b.subarray(0, hdrEnd), 0);
  // The pseudo-header's addresses and protocol are the same for every segment.
  const addrSum = l.ipv6 ? onesSum(b, l3 + 8, 32, 6) : onesSum(b, l3 + 12, 8, 6);
  for (let i = 0, off = 0; i < segs; i++, off += mss) {
    const n = Math.min(mss, payload - off);
    const segLen = hdrEnd + n;
    if (n > 0) scratch.set(b.subarray(hdrEnd + off, hdrEnd + off + n), hdrEnd);
    const ipLen = segLen - l3;
    if (l.ipv6) {
      const pl = ipLen - 40;
      scratch[l3 + 4] = pl >>> 8; scratch[l3 + 5] = pl & 0xff;
    } else {
      const id = (id0 + i) & 0xffff;
      scratch[l3 + 2] = ipLen >>> 8; scratch[l3 + 3] = ipLen & 0xff;
      scratch[l3 + 4] = id >>> 8; scratch[l3 + 5] = id & 0xff;
      scratch[l3 + 10] = 0; scratch[l3 + 11] = 0;
      const ipc = foldComplement(onesSum(scratch, l3, l4 - l3, 0));
      scratch[l3 + 10] = ipc >>> 8; scratch[l3 + 11] = ipc & 0xff;
    }
    const seq = (seq0 + off) >>> 0;
    scratch[l4 + 4] = seq >>> 24; scratch[l4 + 5] = (seq >>> 16) & 0xff;
    scratch[l4 + 6] = (seq >>> 8) & 0xff; scratch[l4 + 7] = seq & 0xff;
    let fl = flags0;
    if (i !== 0) fl &= ~TCP_CWR;
    if (i !== segs - 1) fl &= ~(TCP_FIN | TCP_PSH);
    scratch[l4 + 13] = fl;
    scratch[l4 + 16] = 0; scratch[l4 + 17] = 0;
    const tcpLen = segLen - l4;
    const c = foldComplement(onesSum(scratch, l4, tcpLen, addrSum + tcpLen)) || 0xffff;
    scratch[l4 + 16] = c >>> 8; scratch[l4 + 17] = c & 0xff;
    // An Ethernet pad after the IP packet is not carried over: segments are
    // at least as long as the headers, and a receiver pads as it needs.
    emit(scratch, segLen);
  }
  return segs;
}
