// Frames whose virtio-net header asks for an offload (a partial checksum or
// TCP segmentation), on their way out of the switch: passed on with their
// header to a guest, or an uplink with a vnet header, that takes the same
// offloads; completed or cut into plain frames in software for any other.
// A guest's frame is a flat copy taken once from the sender's ring: the
// sender may rewrite its buffers at any time, and what was validated must be
// what leaves. The uplink's frames are read in place from its RX slot, which
// the kernel leaves alone until we hand it back.
import { completeChecksum, segmentTcp } from '../switch/gso.js';
import { BAD_NOT_NEGOTIATED, CAN_CSUM, FrameLayout, GSO_NONE, HEADER_PEEK, needs, validate, VnetHeader } from '../switch/offload.js';
import { ChainScratch, deliverFrame, MAX_FRAME_LEN, RX_NO_BUFFERS, RX_OK } from '../virtq/index.js';
import type { PortStats } from './api.js';
import type { WorkerQueue } from './port.js';

/** Sends buf[0, len) out of the uplink with virtio_net_hdr `hdr` (null: a plain frame); false: dropped. */
export type UplinkSend = (buf: Uint8Array, len: number, hdr: Uint8Array | null) => boolean;

export class OffloadPath {
  readonly vh = new VnetHeader();
  /** The header as receivers that take it get it (flags other than NEEDS_CSUM cleared). */
  readonly raw = new Uint8Array(10);
  private readonly layout = new FrameLayout();
  private readonly seg = Buffer.allocUnsafe(MAX_FRAME_LEN);
  private need = 0;

  // Target of the segment emitter (set before each segmentTcp call).
  private rx: WorkerQueue | null = null;
  private rc: ChainScratch | null = null;
  private uplink: UplinkSend | null = null;
  private firstResult = RX_OK;
  private delivered = 0;
  private failed = 0;
  private emitted = 0;
  private readonly emit = (b: Uint8Array, len: number): void => {
    if (this.uplink !== null) { this.uplink(b, len, null); return; }
    const rx = this.rx!;
    const r = deliverFrame(rx.q, this.rc!, rx.spec.hdrLen, rx.spec.mrgRxbuf, null, 0, b, 0, len);
    if (this.emitted++ === 0) this.firstResult = r;
    if (r === RX_OK) this.delivered++;
    else this.failed++;
  };

  /** Reads the sender's header (the first 10 bytes of the chain's readable bytes); false if the chain is shorter. */
  readHeader(chain: ChainScratch): boolean {
    const mem = chain.mem!;
    const b = this.raw;
    let d = 0;
    for (let i = 0; i < chain.firstWritable && d < 10; i++) {
      const u8 = mem.u8[chain.region[i]!]!;
      const off = chain.offset[i]!;
      const n = Math.min(chain.length[i]!, 10 - d);
      for (let k = 0; k < n; k++) b[d++] = u8[off + k]!;
    }
    if (d < 10) return false;
    this.vh.read(b, 0);
    this.vh.write(b, 0);
    return true;
  }

  /** Takes the 10-byte header at b[0] (from the uplink) as the one to act on. */
  setHeader(b: Uint8Array): void {
    this.vh.read(b, 0);
    this.vh.write(this.raw, 0);
  }

  /**
   * Checks the header just read against the sender's negotiated offloads and
   * the frame flat[0, len). Returns OFFLOAD_OK or why the frame is dropped
   * (a BAD_* of offload.ts).
   */
  check(sendOffloads: number, flat: Uint8Array, len: number): number {
    this.need = needs(this.vh);
    if ((this.need & ~sendOffloads) !== 0) return BAD_NOT_NEGOTIATED;
    return validate(this.vh, flat, Math.min(HEADER_PEEK, len), len, this.layout);
  }

  private get gso(): boolean { return this.vh.gsoType !== GSO_NONE; }

  /**
   * Delivers the checked frame flat[0, len) to guest queue rx whose guest
   * takes `recvOffloads`, counting on the sender's stats `st`. Returns
   * frames delivered into rx, or -1 when not even the first frame found a
   * buffer (nothing counted: the caller may hold the frame back).
   */
  toGuest(rx: WorkerQueue, rc: ChainScratch, recvOffloads: number, flat: Uint8Array, len: number, st: PortStats): number {
    if ((this.need & ~recvOffloads) === 0) {
      const r = deliverFrame(rx.q, rc, rx.spec.hdrLen, rx.spec.mrgRxbuf, null, 0, flat, 0, len, this.raw);
      if (r === RX_NO_BUFFERS) return -1;
      if (r !== RX_OK) return 0;
      if (this.gso) st.gsoPassed++;
      return 1;
    }
    this.rx = rx;
    this.rc = rc;
    this.uplink = null;
    this.software(flat, len);
    if (this.delivered === 0 && this.firstResult === RX_NO_BUFFERS && this.failed === this.emitted) return -1;
    this.count(st);
    return this.delivered;
  }

  /**
   * Sends the checked frame out of the uplink, which takes `upOffloads` and
   * frames up to `upMax`: as it is, header and all, when those cover it (the
   * kernel segments or checksums it only where its device cannot), else as
   * plain frames.
   */
  toUplink(send: UplinkSend, upOffloads: number, upMax: number, flat: Uint8Array, len: number, st: PortStats): void {
    if (upOffloads !== 0 && (this.need & ~upOffloads) === 0 && len <= upMax) {
      if (send(flat, len, this.raw) && this.gso) st.gsoPassed++;
      return;
    }
    this.uplink = send;
    this.software(flat, len);
    this.uplink = null;
    this.count(st);
  }

  private count(st: PortStats): void {
    if (this.gso) st.gsoSegmented++;
    else if ((this.need & CAN_CSUM) !== 0) st.csumCompleted++;
  }

  private software(flat: Uint8Array, len: number): void {
    this.firstResult = RX_OK;
    this.delivered = this.failed = this.emitted = 0;
    if (this.gso) {
      segmentTcp(flat, this.layout, this.vh, this.seg, this.emit);
      return;
    }
    if ((this.need & CAN_CSUM) !== 0) {
      // On a copy: other receivers of the same frame may take the partial checksum as it is.
      this.seg.set(flat.subarray(0, len), 0);
      completeChecksum(this.seg, len, this.vh);
      this.emit(this.seg, len);
      return;
    }
    this.emit(flat, len);
  }
}
