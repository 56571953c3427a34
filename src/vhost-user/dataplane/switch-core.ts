// The switch inside the data-path worker: MAC learning and the forwarding
// decision (switch/) applied to frames from guest TX chains, from the uplink
// fd, or injected (SEND_RARP), and delivery into guests' RX rings or out of
// the uplink. RX rings written during a batch are published and notified
// once, by flush(), at the end of the batch.
import { eventfdSignal } from '../../sys/eventfd.js';
import { ChainScratch, deliverFrame, MAX_FRAME_LEN, readFrame, RX_NO_BUFFERS, RX_OK, RX_TOO_BIG } from '../virtq/index.js';
import { fastForward, STOP_MAC, stopReason } from '../virtq/native.js';
import { macAt, MacTable, macToString, UPLINK } from '../switch/fdb.js';
import { decide, Topology } from '../switch/forwarding.js';
import { OFFLOAD_OK } from '../switch/offload.js';
import { zeroStats, type PortStats } from './api.js';
import { Decision } from './decision.js';
import { OffloadPath } from './offload-path.js';
import type { WorkerPort, WorkerQueue } from './port.js';
import type { UplinkIo } from './uplink-io.js';

// deliver() results.
export const SENT = 0;
/** The single destination had no buffers and the switch is lossless: put the frame back. */
export const BACKPRESSURE = 1;

const ETH_MIN = 14;
// mac-learned events the worker may post per second (a guest spraying source
// MACs must not flood the main thread); the table itself is capped too.
const EVENTS_PER_SECOND = 200;

export function notify(wq: WorkerQueue, published: number): void {
  if (published !== 0 && wq.q.needsNotify() && wq.callFd >= 0) eventfdSignal(wq.callFd);
}

export class SwitchCore {
  readonly fdb = new MacTable();
  readonly topo = new Topology();
  readonly ports = new Map<number, WorkerPort>();
  uplink: UplinkIo | null = null;
  /** The last decision for frames from the uplink (as WorkerPort.decision is for a port's). */
  readonly upDecision = new Decision<WorkerPort>();
  readonly uplinkStats: PortStats = zeroStats();
  /**
   * Two ports and no uplink: the VM-to-VM patch. A frame for a guest without
   * RX buffers waits in the sender's ring (back-pressure, lossless) instead
   * of being dropped as a switch with more ports must (one slow guest would
   * otherwise stall every sender).
   */
  lossless = false;
  now = 0;

  private readonly out: number[] = [];
  // RX rings written this batch; a count, not dirty.length = 0, which is a
  // runtime call costing more than the rest of an idle batch (profiled).
  private readonly dirty: WorkerQueue[] = [];
  private dirtyCount = 0;
  private readonly head = new Uint8Array(12);
  private readonly rxChain = new ChainScratch();
  private readonly flat = Buffer.allocUnsafe(MAX_FRAME_LEN);
  private readonly offload = new OffloadPath();
  private readonly sendUplink = (b: Uint8Array, len: number, hdr: Uint8Array | null): boolean => this.toUplink(b, len, hdr);
  private eventBudget = EVENTS_PER_SECOND;
  private eventSecond = 0;
  // Bumped when ports, modes or the uplink change: every port's cached
  // decision (WorkerPort.decision, decision.ts) is void then.
  private epoch = 0;

  constructor(private readonly post: (event: { event: 'mac-learned'; mac: string; port: number; moved: boolean }) => void) {}

  /** Ports, modes or the uplink changed (also call after setting a mode). */
  refreshTopology(): void {
    this.epoch++;
    this.topo.hasUplink = this.uplink !== null;
    this.lossless = this.topo.ids.length === 2 && !this.topo.hasUplink;
  }

  private learn(mac: number, port: number): void {
    const r = this.fdb.learn(mac, port, this.now);
    if (r !== 'new' && r !== 'moved') return;
    const sec = Math.floor(this.now / 1000);
    if (sec !== this.eventSecond) { this.eventSecond = sec; this.eventBudget = EVENTS_PER_SECOND; }
    if (this.eventBudget-- > 0) this.post({ event: 'mac-learned', mac: macToString(mac), port, moved: r === 'moved' });
  }

  /**
   * Destination and source MAC of a TX chain's frame (after its header) into
   * peekDst/peekSrc. Usually both lie in one segment: four DataView reads.
   */
  private peek(chain: ChainScratch, skip: number): boolean {
    const mem = chain.mem!;
    let i = 0;
    const end = chain.firstWritable;
    while (i < end && chain.length[i]! <= skip) skip -= chain.length[i++]!;
    if (i >= end) return false;
    const off = chain.offset[i]! + skip;
    if (chain.length[i]! - skip >= 12) {
      const dv = mem.dv[chain.region[i]!]!;
      // Header and frame in one buffer (the common case): flags and gso_type from the same view.
      this.peekFlags = i === 0 ? dv.getUint16(chain.offset[0]!) : -1;
      this.peekDst = dv.getUint16(off) * 0x100000000 + dv.getUint32(off + 2);
      this.peekSrc = dv.getUint16(off + 6) * 0x100000000 + dv.getUint32(off + 8);
      return true;
    }
    // Split across segments: gather byte by byte.
    const h = this.head;
    let d = 0;
    let o = off;
    let len = chain.length[i]! - skip;
    for (;;) {
      const u8 = mem.u8[chain.region[i]!]!;
      while (len-- > 0 && d < 12) h[d++] = u8[o++]!;
      if (d === 12) break;
      if (++i >= end) return false;
      o = chain.offset[i]!;
      len = chain.length[i]!;
    }
    this.peekDst = macAt(h, 0);
    this.peekSrc = macAt(h, 6);
    this.peekFlags = -1;
    return true;
  }

  /** Caches a decision taken for (dst, src) from a port: one port, or null for nowhere. */
  private remember(d: Decision<WorkerPort>, dst: number, src: number, to: WorkerPort | null, up = false): void {
    d.dst = dst; d.src = src; d.to = to; d.up = up;
    d.gen = this.fdb.gen; d.epoch = this.epoch; d.now = this.now;
  }

  /** Nothing that could change the cached decision changed. */
  private stands(d: Decision<WorkerPort>): boolean {
    return this.fdb.gen === d.gen && this.epoch === d.epoch && this.now === d.now;
  }

  private peekDst = 0;
  private peekSrc = 0;
  /** The header's flags and gso_type as one u16 (0: plain), or -1: not read yet (the header is in its own buffer). */
  private peekFlags = 0;

  /**
   * While the cached decision for frames from `from` stands (one destination
   * port), moves the following frames of its TX queue `tx` that carry the
   * same MACs in one native call (virtq/native.ts): no learning, lookup or
   * per-frame call is needed for them, exactly as with a cache hit in
   * fromGuest(). Returns frames moved; 0 when the cache does not apply or the
   * next frame needs fromGuest() (which then takes it).
   */
  fastForward(from: WorkerPort, pair: number, tx: WorkerQueue, max: number): number {
    const d = from.decision;
    const to = d.to;
    if (!d.streak || !this.stands(d)) return 0;
    if (to === null) return d.up ? this.fastToUplink(from, tx, max) : 0;
    const rx = to.rxQueue(pair);
    if (!rx) return 0;
    const n = fastForward(tx.q, rx.q, max, tx.spec.hdrLen, rx.spec.hdrLen, d.dst, d.src);
    // A stream that ended (other MACs next) waits for a frame that repeats a
    // decision; an empty ring or a frame for the general path does not end it.
    if (n === 0 && stopReason === STOP_MAC) d.streak = false;
    if (n !== 0) {
      from.stats.txFrames += n;
      from.stats.txNative += n;
      to.stats.rxFrames += n;
      this.markDirty(rx);
    }
    return n;
  }

  /** fastForward() for a stream whose decision is "the uplink alone". */
  private fastToUplink(from: WorkerPort, tx: WorkerQueue, max: number): number {
    const d = from.decision;
    const n = this.uplink === null ? 0 : this.uplink.fastSend(tx.q, max, tx.spec.hdrLen, d.dst, d.src);
    if (n === 0 && stopReason === STOP_MAC) d.streak = false;
    if (n !== 0) {
      from.stats.txFrames += n;
      from.stats.txNative += n;
      this.uplinkStats.txFrames += n;
    }
    return n;
  }

  /**
   * The uplink's fastForward(): while the cached decision for frames from
   * the uplink stands (one port), moves the following frames with the same
   * MACs from the uplink's ring into that port's RX queue in one native
   * call. Returns frames moved; 0 when the cache does not apply or the next
   * frame needs fromFlat() (which then takes it).
   */
  fastFromUplink(max: number): number {
    const d = this.upDecision;
    const to = d.to;
    if (!d.streak || to === null || this.uplink === null || !this.stands(d)) return 0;
    const rx = to.rxQueue(0);
    if (!rx) return 0;
    const n = this.uplink.fastReceive(rx.q, max, rx.spec.hdrLen, d.dst, d.src);
    if (n === 0 && stopReason === STOP_MAC) d.streak = false;
    if (n !== 0) {
      this.uplinkStats.rxFrames += n;
      to.stats.rxFrames += n;
      this.markDirty(rx);
    }
    return n;
  }

  /**
   * Switches one frame from a guest TX chain of port `from` (queue pair
   * `pair`). Returns SENT (the caller completes the chain) or BACKPRESSURE
   * (the caller un-pops it and stops the batch).
   */
  fromGuest(from: WorkerPort, pair: number, chain: ChainScratch, hdrLen: number): number {
    const st = from.stats;
    const frameLen = chain.readable - hdrLen;
    if (frameLen < ETH_MIN || frameLen > MAX_FRAME_LEN || !this.peek(chain, hdrLen)) {
      st.txDropped++;
      return SENT;
    }
    // flags and gso_type: any offload takes the copying path below.
    const fl = this.peekFlags;
    if (fl !== 0 && (fl > 0 || (this.offload.readHeader(chain) && !this.offload.vh.plain))) {
      return this.fromGuestOffloaded(from, pair, chain, hdrLen, frameLen);
    }
    const dst = this.peekDst;
    const src = this.peekSrc;
    let to: WorkerPort | null | undefined;
    let n = 1;
    const d = from.decision;
    const hit = dst === d.dst && src === d.src && this.stands(d);
    d.streak = hit;
    if (hit) {
      to = d.to;
      if (to === null) {
        // Cached "the uplink alone" (the usual way out of the switch), or
        // "nowhere" (filtered, or a flood with no other port).
        if (d.up) this.toUplinkChain(chain, hdrLen);
        st.txFrames++;
        return SENT;
      }
    } else {
      n = decide(this.fdb, this.topo, from.id, dst, src, this.now, this.out);
      to = n === 1 && this.out[0]! >= 0 ? this.ports.get(this.out[0]!) : null;
      if (n === 0 || (n === 1 && this.out[0] === UPLINK)) {
        this.learn(src, from.id);
        this.remember(d, dst, src, null, n === 1);
        if (n === 1) this.toUplinkChain(chain, hdrLen);
        st.txFrames++;
        return SENT;
      }
    }
    if (to !== null) {
      // Unicast (or a flood that reaches one port): the hot path.
      const rx = to?.rxQueue(pair);
      if (!to || !rx) { st.txDropped++; this.learn(src, from.id); return SENT; }
      const r = deliverFrame(rx.q, this.rxChain, rx.spec.hdrLen, rx.spec.mrgRxbuf, chain, hdrLen, null, 0, frameLen);
      if (r === RX_NO_BUFFERS && this.lossless) return BACKPRESSURE;
      if (!hit) {
        this.learn(src, from.id);
        // Cache after learning: a first sighting bumps the generation.
        this.remember(d, dst, src, to);
      }
      st.txFrames++;
      if (r === RX_OK) { to.stats.rxFrames++; this.markDirty(rx); }
      else if (r === RX_TOO_BIG) st.txDropped++;
      else to.stats.rxDropped++;
      return SENT;
    }
    this.learn(src, from.id);
    st.txFrames++;
    const out = this.out;
    for (let i = 0; i < n; i++) {
      const p = out[i]!;
      if (p === UPLINK) { this.toUplinkChain(chain, hdrLen); continue; }
      const to = this.ports.get(p);
      const rx = to?.rxQueue(pair);
      if (!to || !rx) continue;
      const r = deliverFrame(rx.q, this.rxChain, rx.spec.hdrLen, rx.spec.mrgRxbuf, chain, hdrLen, null, 0, frameLen);
      if (r === RX_OK) { to.stats.rxFrames++; this.markDirty(rx); } else to.stats.rxDropped++;
    }
    return SENT;
  }

  /**
   * fromGuest() for a frame whose header asks for an offload: copied out
   * once, checked (a lying or unnegotiated header drops it, counted in
   * badOffload), then passed on as it is or completed in software per
   * destination (offload-path.ts). Not cached: the native fast path stops in
   * front of such frames anyway.
   */
  private fromGuestOffloaded(from: WorkerPort, pair: number, chain: ChainScratch, hdrLen: number, frameLen: number): number {
    const st = from.stats;
    const o = this.offload;
    const flat = this.flat;
    if (!o.readHeader(chain) || readFrame(chain, hdrLen, flat, 0) !== frameLen || o.check(from.sendOffloads, flat, frameLen) !== OFFLOAD_OK) {
      st.badOffload++;
      st.txDropped++;
      return SENT;
    }
    if (!this.offloadedOut(from.id, pair, flat, frameLen, st)) return BACKPRESSURE;
    st.txFrames++;
    return SENT;
  }

  /**
   * A frame from the uplink whose vnet header `hdr` asks for an offload (a
   * GSO or partial-checksum skb of the host's): checked as a guest's would
   * be, then passed on or completed per port. Read in place (flat: the
   * frame in its RX slot).
   */
  private fromUplinkOffloaded(flat: Uint8Array, len: number, hdr: Uint8Array): void {
    const st = this.uplinkStats;
    this.offload.setHeader(hdr);
    if (this.offload.check(this.uplink?.offloads ?? 0, flat, len) !== OFFLOAD_OK) { st.badOffload++; st.rxDropped++; return; }
    this.offloadedOut(UPLINK, 0, flat, len, st);
  }

  /** Switches a checked offloaded frame from `ingress`, counting on `st`; false: back-pressure (nothing learned). */
  private offloadedOut(ingress: number, pair: number, flat: Uint8Array, len: number, st: PortStats): boolean {
    const o = this.offload;
    const src = macAt(flat, 6);
    const out = this.out;
    const n = decide(this.fdb, this.topo, ingress, macAt(flat, 0), src, this.now, out);
    for (let i = 0; i < n; i++) {
      const p = out[i]!;
      if (p === UPLINK) { o.toUplink(this.sendUplink, this.uplink?.offloads ?? 0, this.uplink?.maxSend ?? 0, flat, len, st); continue; }
      const to = this.ports.get(p);
      const rx = to?.rxQueue(pair);
      if (!to || !rx) continue;
      const got = o.toGuest(rx, this.rxChain, to.recvOffloads, flat, len, st);
      if (got < 0 && n === 1 && this.lossless) return false;
      if (got > 0) { to.stats.rxFrames += got; this.markDirty(rx); } else to.stats.rxDropped++;
    }
    this.learn(src, ingress);
    return true;
  }

  /** Switches one frame held in buf[off, off + len) that entered on `ingress` (UPLINK with its offload header `hdr`, or a port for injected frames). */
  fromFlat(ingress: number, buf: Uint8Array, off: number, len: number, hdr: Uint8Array | null = null): void {
    if (len < ETH_MIN) return;
    if (hdr !== null) { this.fromUplinkOffloaded(buf.subarray(off, off + len), len, hdr); return; }
    const dst = macAt(buf, off);
    const src = macAt(buf, off + 6);
    const out = this.out;
    if (ingress === UPLINK) {
      // A stream from the outside to one guest: the decision cached as for
      // a port's frames (see fromGuest), and fastFromUplink() takes the run.
      const d = this.upDecision;
      const hit = dst === d.dst && src === d.src && this.stands(d) && d.to !== null;
      d.streak = hit;
      if (hit) { this.toPort(d.to!, buf, off, len); return; }
    }
    // Decide before learning: from the uplink, the hairpin check needs to
    // know whether the source is one of our ports.
    const n = decide(this.fdb, this.topo, ingress, dst, src, this.now, out);
    this.learn(src, ingress);
    if (ingress === UPLINK) {
      // Cache after learning: a first sighting bumps the generation.
      const to = n === 1 && out[0]! >= 0 ? this.ports.get(out[0]!) ?? null : null;
      this.remember(this.upDecision, dst, src, to);
    }
    for (let i = 0; i < n; i++) {
      const p = out[i]!;
      if (p === UPLINK) {
        if (this.uplink?.sendFlat(buf, off, len)) this.uplinkStats.txFrames++;
        else this.uplinkStats.txDropped++;
        continue;
      }
      const to = this.ports.get(p);
      if (to) this.toPort(to, buf, off, len);
    }
  }

  private toPort(to: WorkerPort, buf: Uint8Array, off: number, len: number): void {
    const rx = to.rxQueue(0);
    if (!rx) return;
    const r = deliverFrame(rx.q, this.rxChain, rx.spec.hdrLen, rx.spec.mrgRxbuf, null, 0, buf, off, len);
    if (r === RX_OK) { to.stats.rxFrames++; this.markDirty(rx); } else to.stats.rxDropped++;
  }

  /** A frame of offload-path.ts (checked, with its header, or made plain in software) out of the uplink. */
  private toUplink(buf: Uint8Array, len: number, hdr: Uint8Array | null): boolean {
    const ok = this.uplink?.sendFlat(buf, 0, len, hdr) ?? false;
    if (ok) this.uplinkStats.txFrames++;
    else this.uplinkStats.txDropped++;
    return ok;
  }

  private toUplinkChain(chain: ChainScratch, hdrLen: number): void {
    // A full TX ring or tap queue, or a frame above the device MTU, drops
    // the frame, as a NIC would.
    if (this.uplink?.sendChain(chain, hdrLen)) this.uplinkStats.txFrames++;
    else this.uplinkStats.txDropped++;
  }

  private markDirty(rx: WorkerQueue): void {
    if (rx.dirty) return;
    rx.dirty = true;
    this.dirty[this.dirtyCount++] = rx;
  }

  /** Publishes every RX ring written since the last flush and signals the guests that want it. */
  flush(): void {
    this.uplink?.flush();
    const d = this.dirty;
    const n = this.dirtyCount;
    if (n === 0) return;
    for (let i = 0; i < n; i++) {
      const rx = d[i]!;
      rx.dirty = false;
      notify(rx, rx.q.flushUsed());
    }
    this.dirtyCount = 0;
  }

  /** Drops pending RX work of queues about to go away (their used entries were flushed by stopQueue). */
  forget(): void {
    for (let i = 0; i < this.dirtyCount; i++) this.dirty[i]!.dirty = false;
    this.dirtyCount = 0;
    this.dirty.length = 0; // drop references to queues that may be going away
  }
}
