// Our own vhost-user front-end: a test driver (as rust-vmm keeps one) that
// plays the part of QEMU or DPDK virtio-user against the back-end, in-process
// over a socketpair or against the real `vhost-user serve` over its socket.
// It owns a memfd-backed "guest memory", drives split rings in it from the
// guest side (reusing mock-driver's MockVirtq), and exposes the raw socket so
// hostile tests can send anything at all. Test code: helpers throw freely.
//
// This file holds the handshake and data helpers and re-exports the parts it
// is built from (socket, syscalls, guest memory, rings, /proc checks), so
// tests import everything from here.
import { connectUnix } from '../../src/sys/unix-socket.js';
import * as F from './frontend-codec.js';
import { Feature, featureBit, hasFeature, ProtoFeature, Req } from '../../src/vhost-user/protocol/index.js';
import { FrontendSocket } from './frontend-socket.js';
import { sleep } from './frontend-syscalls.js';
import { GuestMemfd, type GuestMemoryOptions } from './guest-memory.js';
import { GuestRing } from './guest-ring.js';

export { FrontendSocket, type Event, type Reply } from './frontend-socket.js';
export { dup, eventfdAdd, ftruncate, makeEventfd, memfdCreate, pipe, recvmsgFds, sendmsgFds, sleep } from './frontend-syscalls.js';
export { GuestMemfd, PAGE, type GuestMemoryOptions } from './guest-memory.js';
export { BUF_SIZE, GuestRing, LAYOUT, NET_HDR } from './guest-ring.js';
export { frameSeq, testFrame } from './frames.js';
export { fdCount, fdList, fdOpen, mappingsOf, processAlive } from './proc-inspect.js';

export interface HandshakeOptions {
  /** 'dpdk': virtio-user's order; 'qemu': QEMU's (ENABLE before the memory table). */
  order?: 'dpdk' | 'qemu';
  /** Virtio features wanted (intersected with what the back-end offers). */
  features?: bigint;
  /** Protocol features wanted (intersected with the offer). */
  protocolFeatures?: bigint;
  queueSize?: number;
  /** Queue pairs to set up (default 1). */
  queuePairs?: number;
  /** Guest memory to announce (default: a fresh 4 MiB memfd). */
  memory?: GuestMemoryOptions;
  /** Post every RX buffer right after the rings start (default true). */
  postRx?: boolean;
}

/** What DPDK virtio-user negotiates by default, plus what our back-end offers on top. */
export const DEFAULT_FEATURES = [Feature.VERSION_1, Feature.MRG_RXBUF, Feature.EVENT_IDX, Feature.INDIRECT_DESC,
  Feature.PROTOCOL_FEATURES, Feature.STATUS, Feature.MTU].reduce((m, b) => m | featureBit(b), 0n);
/** DPDK virtio-user accepts MQ, REPLY_ACK and STATUS only. */
export const DEFAULT_PROTOCOL_FEATURES = [ProtoFeature.MQ, ProtoFeature.REPLY_ACK, ProtoFeature.STATUS]
  .reduce((m, b) => m | featureBit(b), 0n);

export class VhostFrontend extends FrontendSocket {
  guest: GuestMemfd | null = null;
  rings: GuestRing[] = [];
  offeredFeatures = 0n;
  features = 0n;
  offeredProtocolFeatures = 0n;
  queueNum = 0;

  static connect(path: string): VhostFrontend {
    return new VhostFrontend(connectUnix(path));
  }

  /** Connects, retrying while the server refuses (its previous connection still closing). */
  static async connectReady(path: string, timeoutMs = 5000): Promise<VhostFrontend> {
    const deadline = Date.now() + timeoutMs;
    for (;;) {
      const fe = VhostFrontend.connect(path);
      const r = await fe.call(Req.GET_FEATURES).then(() => true, () => false);
      if (r) return fe;
      fe.close();
      if (Date.now() > deadline) throw new Error(`${path}: no front-end connection accepted within ${timeoutMs} ms`);
      await sleep(2);
    }
  }

  get rx(): GuestRing { return this.rings[0]!; }
  get tx(): GuestRing { return this.rings[1]!; }

  // ---- handshake ----

  /** Creates the guest memory and rings (nothing is sent). Idempotent. */
  prepareGuest(o: HandshakeOptions = {}): void {
    if (this.guest) return;
    const size = o.queueSize ?? 256;
    const pairs = o.queuePairs ?? 1;
    this.guest = new GuestMemfd(o.memory);
    this.rings = Array.from({ length: pairs * 2 }, (_, i) => new GuestRing(this.guest!, i, size));
  }

  /** GET_FEATURES, then GET/SET_PROTOCOL_FEATURES and GET_QUEUE_NUM when offered. */
  async negotiateProtocol(o: HandshakeOptions = {}): Promise<void> {
    this.offeredFeatures = await this.callU64(Req.GET_FEATURES);
    if (!hasFeature(this.offeredFeatures, Feature.PROTOCOL_FEATURES)) return;
    this.offeredProtocolFeatures = await this.callU64(Req.GET_PROTOCOL_FEATURES);
    const want = (o.protocolFeatures ?? DEFAULT_PROTOCOL_FEATURES) & this.offeredProtocolFeatures;
    // SET_PROTOCOL_FEATURES itself goes without NEED_REPLY: REPLY_ACK is not on yet.
    if (!this.request(Req.SET_PROTOCOL_FEATURES, F.u64(want))) throw new Error('closed at SET_PROTOCOL_FEATURES');
    this.protocolFeatures = want;
    if (hasFeature(want, ProtoFeature.MQ)) this.queueNum = Number(await this.callU64(Req.GET_QUEUE_NUM));
  }

  async setFeatures(o: HandshakeOptions = {}): Promise<void> {
    this.features = (o.features ?? DEFAULT_FEATURES) & this.offeredFeatures;
    await this.set(Req.SET_FEATURES, F.u64(this.features));
  }

  sendMemTable(): Promise<void> {
    return this.set(Req.SET_MEM_TABLE, F.memTable(this.guest!.regions()), this.guest!.fds());
  }

  async setCall(r: GuestRing): Promise<void> {
    await this.set(Req.SET_VRING_CALL, F.vringFdMsg(r.index, false), [r.callFd]);
  }

  async setEnable(r: GuestRing, on = true): Promise<void> {
    await this.set(Req.SET_VRING_ENABLE, F.vringState(r.index, on ? 1 : 0));
  }

  /** NUM, BASE, ADDR, KICK for one ring (the order QEMU and DPDK share). */
  async setupRing(r: GuestRing, base = 0): Promise<void> {
    await this.set(Req.SET_VRING_NUM, F.vringState(r.index, r.size));
    await this.set(Req.SET_VRING_BASE, F.vringState(r.index, base));
    await this.set(Req.SET_VRING_ADDR, F.vringAddr(r.addr()));
    await this.set(Req.SET_VRING_KICK, F.vringFdMsg(r.index, false), [r.kickFd]);
  }

  /**
   * Full setup, in DPDK virtio-user's order (default) or QEMU's. Creates the
   * guest memory and the rings; on return every ring has started (the last
   * messages were acknowledged, or a barrier passed).
   */
  async handshake(o: HandshakeOptions = {}): Promise<void> {
    this.prepareGuest(o);
    const withProtocol = (): boolean => hasFeature(this.offeredFeatures, Feature.PROTOCOL_FEATURES);
    if ((o.order ?? 'dpdk') === 'dpdk') {
      await this.set(Req.SET_OWNER);
      await this.negotiateProtocol(o);
      for (const r of this.rings) await this.setCall(r);
      await this.setFeatures(o);
      await this.sendMemTable();
      for (const r of this.rings) await this.setupRing(r);
      if (withProtocol()) for (const r of this.rings) await this.setEnable(r);
      if (hasFeature(this.protocolFeatures, ProtoFeature.STATUS)) await this.set(Req.SET_STATUS, F.u64(0xfn));
    } else {
      await this.negotiateProtocol(o);
      if (hasFeature(this.protocolFeatures, ProtoFeature.CONFIGURE_MEM_SLOTS)) await this.callU64(Req.GET_MAX_MEM_SLOTS);
      await this.set(Req.SET_OWNER);
      await this.callU64(Req.GET_FEATURES);
      for (const r of this.rings) await this.setCall(r);
      if (withProtocol()) for (const r of this.rings) await this.setEnable(r);
      await this.setFeatures(o);
      await this.sendMemTable();
      for (const r of this.rings) {
        await this.setupRing(r);
        await this.setCall(r);
      }
    }
    if (!this.replyAck) await this.barrier();
    if (o.postRx ?? true) for (const r of this.rings) if (r.isRx) r.postRx();
  }

  /** GET_VRING_BASE: stops the ring in the back-end, returns its next avail index. */
  async getVringBase(index: number): Promise<number> {
    return F.replyVringState(await this.call(Req.GET_VRING_BASE, F.vringState(index, 0))).num;
  }

  // ---- data ----

  /** Polls until `cond()` holds (rings are shared memory: nothing to wait on but time). */
  static async until(cond: () => boolean, timeoutMs: number, what: () => string): Promise<void> {
    const deadline = Date.now() + timeoutMs;
    while (!cond()) {
      if (Date.now() > deadline) throw new Error(`timed out after ${timeoutMs} ms waiting for ${what()}`);
      await sleep(1);
    }
  }

  /**
   * Receives on RX ring `index` until `n` frames arrived (re-posting buffers
   * as it goes); rejected buffers (len 0) are counted apart.
   */
  async receive(n: number, timeoutMs = 3000, index = 0): Promise<{ frames: Uint8Array[]; rejected: number }> {
    const rx = this.rings[index]!;
    const frames: Uint8Array[] = [];
    let rejected = 0;
    await VhostFrontend.until(() => {
      for (const f of rx.takeRx()) {
        if (f) frames.push(f); else rejected++;
      }
      if (rx.freeCount) rx.postRx();
      return frames.length >= n;
    }, timeoutMs, () => `${n} frames on ring ${index} (got ${frames.length}, ${rejected} buffers rejected)`);
    return { frames, rejected };
  }

  /** Sends frames on TX ring `index`, waiting for room; resolves once all were taken. */
  async transmit(frames: readonly Uint8Array[], timeoutMs = 3000, index = 1): Promise<void> {
    const tx = this.rings[index]!;
    let sent = 0;
    await VhostFrontend.until(() => {
      sent += tx.sendFrames(frames.slice(sent, sent + 64));
      tx.reclaim();
      return sent === frames.length && tx.outstanding.size === 0;
    }, timeoutMs, () => `TX ring ${index} to take ${frames.length} frames (sent ${sent}, ${tx.outstanding.size} still in the ring; avail.idx ${tx.q.availIdx}, used.idx ${tx.usedIdx()}, used flags ${tx.q.usedFlags()}, avail_event ${tx.q.availEvent()}, kicks pending ${tx.kickPending()})`);
  }

  /** Closes the socket, the rings' eventfds and the guest memory. */
  override close(): void {
    if (this.isClosed) return;
    super.close();
    for (const r of this.rings) r.close();
    this.guest?.close();
    this.guest = null;
  }
}
