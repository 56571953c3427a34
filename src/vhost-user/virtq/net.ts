// virtio-net framing over split queues (spec 5.1.6): every frame is preceded
// by a struct virtio_net_hdr of 12 bytes (VERSION_1 or MRG_RXBUF) or 10 bytes
// (legacy without MRG_RXBUF). ANY_LAYOUT is always assumed: the header and the
// frame may be cut across descriptors anywhere.

import { BAD_SHORT_RX, type ChainScratch } from './chain.js';
import { copyBytes, dataViewOf } from './copy.js';
import type { SplitQueue } from './split.js';

const NET_HDR_LEN = 12;
const NET_HDR_LEN_LEGACY = 10;
/** Largest frame we move (GSO frames included); the header comes on top. */
export const MAX_FRAME_LEN = 65535;

/** Header length for the negotiated features. */
export function netHeaderLen(version1: boolean, mrgRxbuf: boolean): number {
  return version1 || mrgRxbuf ? NET_HDR_LEN : NET_HDR_LEN_LEGACY;
}

// writeFrame()/deliverFrame() results.
export const RX_OK = 0;
/** No (more) RX chains: frame not delivered, nothing consumed. */
export const RX_NO_BUFFERS = -1;
/** Without MRG_RXBUF the next chain cannot hold header + frame: dropped. */
export const RX_TOO_BIG = -2;
/** The RX queue is broken (or the frame arguments are invalid). */
const RX_BROKEN = -3;

const EMPTY_U8: Uint8Array = new Uint8Array(0);
const EMPTY_DV: DataView = new DataView(new ArrayBuffer(0));

/**
 * TX: copies the frame of a popped chain (its device-readable bytes minus
 * the header) into dst at dstOff. Returns the frame length, or -1 if the
 * chain is shorter than a header, the frame exceeds MAX_FRAME_LEN, or it does
 * not fit in dst. The caller completes the chain with pushUsed(head, 0).
 */
export function readFrame(chain: ChainScratch, hdrLen: number, dst: Uint8Array, dstOff: number): number {
  const frameLen = chain.readable - hdrLen;
  if (frameLen < 0 || frameLen > MAX_FRAME_LEN) return -1;
  if (!(dstOff >= 0) || frameLen > dst.length - dstOff) return -1;
  const mem = chain.mem!;
  const dstDv = dataViewOf(dst);
  let skip = hdrLen;
  let d = dstOff;
  const end = chain.firstWritable; // device-writable segments are not read
  for (let i = 0; i < end; i++) {
    let off = chain.offset[i]!;
    let len = chain.length[i]!;
    if (skip !== 0) {
      if (len <= skip) { skip -= len; continue; }
      off += skip;
      len -= skip;
      skip = 0;
    }
    const r = chain.region[i]!;
    copyBytes(mem.u8[r]!, mem.dv[r]!, off, dst, dstDv, d, len);
    d += len;
  }
  return frameLen;
}

/**
 * RX: delivers frame[off, off+len) to the guest behind a zeroed header
 * (flags 0, GSO_NONE, num_buffers = chains used). Pops as many chains as
 * needed with MRG_RXBUF (one used entry each), exactly one without. Used
 * entries are written but not published: flushUsed() once per batch.
 * Returns RX_OK, RX_NO_BUFFERS (queue state unchanged: chains popped for
 * this frame are put back), RX_TOO_BIG or RX_BROKEN.
 */
export function writeFrame(
  rx: SplitQueue, chain: ChainScratch, frame: Uint8Array, off: number, len: number,
  hdrLen: number, mrgRxbuf: boolean,
): number {
  if (!(off >= 0 && len >= 0 && len <= frame.length - off)) return RX_BROKEN;
  if (len > MAX_FRAME_LEN) return RX_TOO_BIG;
  return deliverFrame(rx, chain, hdrLen, mrgRxbuf, null, 0, frame, off, len);
}

/**
 * Core of writeFrame() and Forwarder: the source is either a popped TX chain
 * `src` (its first `srcSkip` readable bytes skipped: the sender's header) or
 * a flat buffer `flat` at `flatOff`. frameLen must not exceed the source.
 *
 * Policy for RX chains that cannot be used:
 * - Without MRG_RXBUF, a chain too small for header + frame is put back
 *   (un-popped) and the frame dropped: a smaller frame may still fit it, and
 *   the guest sees nothing odd (spec 5.1.6.3 only says it SHOULD post
 *   buffers of at least 1526 / 65562 bytes).
 * - With MRG_RXBUF every buffer MUST hold at least a header (5.1.6.3.1); a
 *   smaller chain is returned with len 0 and counted as bad.
 * - Running out of chains mid-frame rolls back with SplitQueue.rewind().
 *
 * vnetHdr: the first 10 bytes of the header to write (flags, gso_type,
 * hdr_len, gso_size, csum_start, csum_offset) for a receiver that takes the
 * frame's offloads as they are; null writes a plain header.
 */
export function deliverFrame(
  rx: SplitQueue, rc: ChainScratch, rxHdr: number, mrg: boolean,
  src: ChainScratch | null, srcSkip: number,
  flat: Uint8Array | null, flatOff: number, frameLen: number,
  vnetHdr: Uint8Array | null = null,
): number {
  // The common case first: the whole frame in one source buffer and an RX
  // chain of one writable buffer that holds header + frame (what DPDK's PMD
  // and Linux post), no dirty logging. Anything else, including a chain this
  // path looked at and put back, takes the general walk below.
  if (rx.log === null && (src === null || (src.firstWritable !== 0 && src.length[0]! - srcSkip >= frameLen))) {
    const head = rx.popChain(rc);
    if (head < 0) return head === -1 ? RX_NO_BUFFERS : RX_BROKEN;
    const fw = rc.firstWritable;
    if (rc.count === fw + 1 && rc.length[fw]! >= rxHdr + frameLen) {
      const dMem = rc.mem!;
      const r = rc.region[fw]!;
      const dDv = dMem.dv[r]!;
      const dOff = rc.offset[fw]!;
      dDv.setUint32(dOff, 0, true);
      dDv.setUint32(dOff + 4, 0, true);
      // csum_offset 0, then num_buffers 1 (12-byte header only).
      if (rxHdr === NET_HDR_LEN) dDv.setUint32(dOff + 8, 0x10000, true);
      else dDv.setUint16(dOff + 8, 0, true);
      if (vnetHdr !== null) dMem.u8[r]!.set(vnetHdr.subarray(0, 10), dOff);
      if (src === null) {
        copyBytes(flat!, dataViewOf(flat!), flatOff, dMem.u8[r]!, dDv, dOff + rxHdr, frameLen);
      } else {
        const sMem = src.mem!;
        const q = src.region[0]!;
        copyBytes(sMem.u8[q]!, sMem.dv[q]!, src.offset[0]! + srcSkip, dMem.u8[r]!, dDv, dOff + rxHdr, frameLen);
      }
      rx.pushUsed(head, rxHdr + frameLen);
      return RX_OK;
    }
    rx.unpop();
  }
  // Source cursor.
  let sU8: Uint8Array = EMPTY_U8;
  let sDv: DataView = EMPTY_DV;
  let sOff = 0;
  let sRem = 0;
  let si = 0;
  let sEnd = 0;
  const sMem = src !== null ? src.mem! : null;
  if (src === null) {
    sU8 = flat!;
    sDv = dataViewOf(sU8);
    sOff = flatOff;
    sRem = frameLen;
  } else {
    sEnd = src.firstWritable;
    let skip = srcSkip;
    while (si < sEnd && src.length[si]! <= skip) skip -= src.length[si++]!;
    if (si < sEnd) {
      const r = src.region[si]!;
      sU8 = sMem!.u8[r]!;
      sDv = sMem!.dv[r]!;
      sOff = src.offset[si]! + skip;
      sRem = src.length[si]! - skip;
    }
  }

  const availMark = rx.lastAvail;
  const usedMark = rx.lastUsed;
  const badMark = rx.badChains;
  let remaining = frameLen;
  let nbuf = 0;
  // Where num_buffers' two bytes landed in the first chain (it is only known
  // at the end with MRG_RXBUF; the header may be split, so track each byte).
  let nbR0 = -1, nbO0 = 0, nbR1 = -1, nbO1 = 0;
  for (;;) {
    const head = rx.popChain(rc);
    if (head < 0) {
      if (nbuf !== 0) rx.rewind(availMark, usedMark, badMark);
      return head === -1 ? RX_NO_BUFFERS : RX_BROKEN;
    }
    const dMem = rc.mem!;
    const dEnd = rc.count;
    if (rc.writableBytes < rxHdr + (mrg ? 0 : remaining)) {
      if (!mrg) {
        rx.unpop();
        return RX_TOO_BIG;
      }
      rx.discard(head, BAD_SHORT_RX);
      continue;
    }
    let di = rc.firstWritable;
    let r = rc.region[di]!; // exists: writableBytes >= rxHdr > 0
    let dU8 = dMem.u8[r]!;
    let dDv = dMem.dv[r]!;
    let dOff = rc.offset[di]!;
    let dRem = rc.length[di]!;
    let written = 0;
    if (nbuf === 0) {
      if (dRem >= rxHdr) {
        dDv.setUint32(dOff, 0, true);
        dDv.setUint32(dOff + 4, 0, true);
        dDv.setUint16(dOff + 8, 0, true);
        if (rxHdr === NET_HDR_LEN) {
          // num_buffers: 1 now (spec: MUST be 1 without MRG_RXBUF), patched below.
          dDv.setUint16(dOff + 10, 1, true);
          nbR0 = nbR1 = r;
          nbO0 = dOff + 10;
          nbO1 = dOff + 11;
        }
        if (vnetHdr !== null) dU8.set(vnetHdr.subarray(0, 10), dOff);
        dOff += rxHdr;
        dRem -= rxHdr;
      } else {
        for (let h = 0; h < rxHdr; h++) {
          while (dRem === 0) {
            r = rc.region[++di]!;
            dU8 = dMem.u8[r]!;
            dDv = dMem.dv[r]!;
            dOff = rc.offset[di]!;
            dRem = rc.length[di]!;
          }
          dU8[dOff] = h === 10 ? 1 : h < 10 && vnetHdr !== null ? vnetHdr[h]! : 0;
          if (h === 10) { nbR0 = r; nbO0 = dOff; }
          if (h === 11) { nbR1 = r; nbO1 = dOff; }
          dOff++;
          dRem--;
        }
      }
      written = rxHdr;
    }
    while (remaining !== 0) {
      if (dRem === 0) {
        if (++di >= dEnd) break; // this chain is full
        r = rc.region[di]!;
        dU8 = dMem.u8[r]!;
        dDv = dMem.dv[r]!;
        dOff = rc.offset[di]!;
        dRem = rc.length[di]!;
      }
      if (sRem === 0) {
        // Cannot run dry (frameLen <= source bytes); guard against looping.
        if (src === null || ++si >= sEnd) { remaining = 0; break; }
        const q = src.region[si]!;
        sU8 = sMem!.u8[q]!;
        sDv = sMem!.dv[q]!;
        sOff = src.offset[si]!;
        sRem = src.length[si]!;
      }
      let n = dRem < sRem ? dRem : sRem;
      if (remaining < n) n = remaining;
      copyBytes(sU8, sDv, sOff, dU8, dDv, dOff, n);
      sOff += n; sRem -= n;
      dOff += n; dRem -= n;
      remaining -= n;
      written += n;
    }
    if (rx.log !== null) rx.logChainWrites(rc, written);
    rx.pushUsed(head, written);
    nbuf++;
    if (remaining === 0) break;
  }
  if (nbuf > 1 && nbR0 >= 0) {
    const mem = rc.mem!;
    mem.u8[nbR0]![nbO0] = nbuf & 0xff;
    mem.u8[nbR1]![nbO1] = nbuf >>> 8;
    // Written after the chain was logged: log these two bytes again.
    if (rx.log !== null) {
      rx.log.mark(mem.regionGpaStart(nbR0) + nbO0, 1);
      rx.log.mark(mem.regionGpaStart(nbR1) + nbO1, 1);
    }
  }
  return RX_OK;
}
