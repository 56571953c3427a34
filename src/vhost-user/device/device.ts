// One vhost-user virtio-net device: the per-connection state machine. It
// follows the spec's ring model (started/stopped independent of
// enabled/disabled), never depends on message order (QEMU sends ENABLE before
// the memory table; DPDK sends it last), and hands the data path plain specs.
// Every handler either replies or throws DeviceError; the connection turns a
// DeviceError into an error reply (REPLY_ACK) or a closed connection.
import { closeFd } from '../../sys/libc.js';
import { Feature, hasFeature, ProtoFeature, Req, encodeAck, encodeU64Reply, encodeVringStateReply, encodeConfigErrorReply, requestFds, type Request } from '../protocol/index.js';
import type { PortDataplane, QueueSpec } from '../dataplane/api.js';
import { CAN_CSUM, CAN_ECN, CAN_TSO4, CAN_TSO6 } from '../switch/offload.js';
import { offeredFeatures, offeredProtocolFeatures } from './features.js';
import { DEFAULT_MEMORY_LIMITS, MemoryTable, regionSpec, viewsNeeded, type MemoryLimits } from './memory-table.js';
import { waitForBudget, type MapBudget } from './map-budget.js';
import { checkNotifyFd, sealRegions } from './fd-checks.js';
import { DeviceError } from './errors.js';

export { DeviceError };

interface Vring {
  num: number;
  desc: number;
  used: number;
  avail: number;
  /** Guest-physical address of the used ring for dirty logging (VRING_F_LOG), or -1. */
  logUsed: number;
  addrSet: boolean;
  base: number;
  kickFd: number;
  /** A kick (fd or NOFD) arrived since the ring was last stopped: the spec's start condition. */
  kicked: boolean;
  callFd: number;
  errFd: number;
  started: boolean;
  enabled: boolean;
}

const newVring = (): Vring => ({ num: 0, desc: 0, used: 0, avail: 0, logUsed: -1, addrSet: false, base: 0, kickFd: -1, kicked: false, callFd: -1, errFd: -1, started: false, enabled: false });

export interface DeviceOptions {
  queuePairs: number;
  /** Largest ring size accepted (virtio allows 32768). */
  maxRingSize?: number;
  /**
   * Accept guest memory nobody can seal against shrinking (default false).
   * Such a front-end can truncate the file and make the data path's next
   * access a SIGBUS that kills every port; only for trusted front-ends that
   * cannot seal (DPDK --no-huge, files on hugetlbfs).
   */
  allowUnsealedMemory?: boolean;
  /** Offer checksum and TSO offloads (default true). */
  offloads?: boolean;
  /** Bounds on the memory table (default DEFAULT_MEMORY_LIMITS). */
  memoryLimits?: MemoryLimits;
  /** The port owner's budget of views to map (none: unbounded, root's own ports). */
  mapBudget?: MapBudget;
}

/** CAN_* bits (switch/offload.ts) from four feature bits: checksum, TSO4, TSO6, ECN. */
function offloadBits(features: bigint, csum: number, tso4: number, tso6: number, ecn: number): number {
  return (hasFeature(features, csum) ? CAN_CSUM : 0) | (hasFeature(features, tso4) ? CAN_TSO4 : 0)
    | (hasFeature(features, tso6) ? CAN_TSO6 : 0) | (hasFeature(features, ecn) ? CAN_ECN : 0);
}

export class VhostUserNetDevice {
  private features = 0n;
  private protocolFeatures = 0n;
  private owner = false;
  private readonly mem = new MemoryTable();
  private readonly vrings: Vring[];
  private status = 0;
  mtu = 0;
  guestMac: Uint8Array | null = null;
  private readonly maxRing: number;
  private closed = false;

  constructor(private readonly dp: PortDataplane, private readonly opts: DeviceOptions) {
    this.vrings = Array.from({ length: opts.queuePairs * 2 }, newVring);
    this.maxRing = opts.maxRingSize ?? 32768;
  }

  private get limits(): MemoryLimits { return this.opts.memoryLimits ?? DEFAULT_MEMORY_LIMITS; }

  get replyAck(): boolean { return hasFeature(this.protocolFeatures, ProtoFeature.REPLY_ACK); }

  /** Handles one request; returns the reply bytes, or null when none is due. */
  async handle(req: Request): Promise<Uint8Array | null> {
    switch (req.kind) {
      case 'GET_FEATURES': return encodeU64Reply(Req.GET_FEATURES, offeredFeatures(this.opts.queuePairs, this.opts.offloads ?? true));
      case 'SET_FEATURES': {
        const unknown = req.features & ~offeredFeatures(this.opts.queuePairs, this.opts.offloads ?? true);
        if (unknown) throw new DeviceError(`SET_FEATURES acks features we never offered: 0x${unknown.toString(16)}`);
        this.features = req.features;
        // Without PROTOCOL_FEATURES rings are enabled as soon as they start (spec).
        if (!hasFeature(this.features, Feature.PROTOCOL_FEATURES)) for (const v of this.vrings) v.enabled = true;
        await this.restartRunning();
        return null;
      }
      case 'GET_PROTOCOL_FEATURES': return encodeU64Reply(Req.GET_PROTOCOL_FEATURES, offeredProtocolFeatures());
      case 'SET_PROTOCOL_FEATURES': {
        const unknown = req.features & ~offeredProtocolFeatures();
        if (unknown) throw new DeviceError(`SET_PROTOCOL_FEATURES acks features we never offered: 0x${unknown.toString(16)}`);
        this.protocolFeatures = req.features;
        return null;
      }
      case 'SET_OWNER': this.owner = true; return null;
      case 'RESET_OWNER':
      case 'RESET_DEVICE': await this.reset(); return null;
      case 'GET_QUEUE_NUM': return encodeU64Reply(Req.GET_QUEUE_NUM, BigInt(this.opts.queuePairs));
      case 'GET_MAX_MEM_SLOTS': return encodeU64Reply(Req.GET_MAX_MEM_SLOTS, BigInt(this.limits.maxRegions));
      case 'SET_MEM_TABLE': {
        let specs;
        try {
          specs = req.regions.map((r) => regionSpec(r, r.fd));
          MemoryTable.check(specs, this.limits);
          sealRegions(specs.map((r) => r.fd), this.opts.allowUnsealedMemory ?? false);
        } catch (e) {
          requestFds(req).forEach(closeFd);
          throw new DeviceError(`SET_MEM_TABLE: ${(e as Error).message}`);
        }
        await waitForBudget(this.opts.mapBudget, 'SET_MEM_TABLE', viewsNeeded(specs), requestFds(req), () => this.closed);
        await this.replaceMemory(specs);
        return null;
      }
      case 'ADD_MEM_REG': {
        let spec;
        try {
          spec = regionSpec(req.region, req.fd);
          // QEMU up to 8.0 sends the region table once per vhost_dev, i.e. once
          // per queue pair of a multiqueue NIC on the same connection: the same
          // region again is a no-op (refusing it made QEMU 7.2 give up vhost).
          if (this.mem.regions.some((r) => sameRegion(r, spec!))) {
            closeFd(req.fd);
            return null;
          }
          MemoryTable.check([...this.mem.regions, spec], this.limits);
          sealRegions([spec.fd], this.opts.allowUnsealedMemory ?? false);
        } catch (e) {
          closeFd(req.fd);
          throw new DeviceError(`ADD_MEM_REG: ${(e as Error).message}`);
        }
        await waitForBudget(this.opts.mapBudget, 'ADD_MEM_REG', viewsNeeded([...this.mem.regions, spec]), [req.fd], () => this.closed);
        await this.replaceMemory([...this.mem.regions, spec], true);
        return null;
      }
      case 'REM_MEM_REG': {
        if (req.fd !== undefined) closeFd(req.fd);
        const gpa = Number(req.region.guestPhysAddr);
        const keep = this.mem.regions.filter((r) => !(r.guestPhysAddr === gpa && r.size === Number(req.region.memorySize) && r.userAddr === Number(req.region.userspaceAddr)));
        // Already removed: the next queue pair's vhost_dev repeating it (see ADD_MEM_REG).
        if (keep.length === this.mem.regions.length) return null;
        const gone = this.mem.regions.filter((r) => !keep.includes(r));
        await waitForBudget(this.opts.mapBudget, 'REM_MEM_REG', viewsNeeded(keep), [], () => this.closed);
        await this.replaceMemory(keep, true, gone.map((r) => r.fd));
        return null;
      }
      case 'SET_LOG_BASE': {
        // Live migration: the data path maps the log and marks every page it
        // writes while LOG_ALL is on. The fd is ours to close once mapped.
        await waitForBudget(this.opts.mapBudget, 'SET_LOG_BASE', 1, [req.fd], () => this.closed);
        try {
          const size = Number(req.mmapSize);
          const offset = Number(req.mmapOffset);
          // A log covers 8 pages per byte: 1 GiB of log is 32 TiB of guest memory.
          if (size > 2 ** 30 || !Number.isSafeInteger(offset)) throw new Error(`log of ${req.mmapSize} bytes at ${req.mmapOffset} is out of range`);
          sealRegions([req.fd], this.opts.allowUnsealedMemory ?? false);
          await this.dp.setLog({ fd: req.fd, size, offset });
        } catch (e) {
          throw new DeviceError(`SET_LOG_BASE: ${(e as Error).message}`);
        } finally {
          closeFd(req.fd);
        }
        return encodeU64Reply(Req.SET_LOG_BASE, 0n);
      }
      case 'SET_LOG_FD': closeFd(req.fd); return null;
      case 'SET_VRING_NUM': {
        const v = this.ring(req.index);
        if (req.num === 0 || req.num > this.maxRing || (req.num & (req.num - 1)) !== 0) throw new DeviceError(`SET_VRING_NUM ${req.num} for ring ${req.index}: must be a power of two up to ${this.maxRing}`);
        if (v.started) throw new DeviceError(`SET_VRING_NUM on running ring ${req.index}`);
        v.num = req.num;
        // Any order: the size may be the last piece a kicked ring was missing.
        await this.maybeStart(req.index);
        return null;
      }
      case 'SET_VRING_BASE': {
        const v = this.ring(req.index);
        if (v.started) throw new DeviceError(`SET_VRING_BASE on running ring ${req.index}`);
        if (req.num > 0xffff) throw new DeviceError(`SET_VRING_BASE ${req.num} is not a 16-bit index`);
        v.base = req.num;
        return null;
      }
      case 'SET_VRING_ADDR': {
        const v = this.ring(req.index);
        const n = (x: bigint, what: string): number => {
          if (x > BigInt(Number.MAX_SAFE_INTEGER)) throw new DeviceError(`SET_VRING_ADDR ring ${req.index}: ${what} beyond 2^53`);
          return Number(x);
        };
        v.desc = n(req.desc, 'desc');
        v.used = n(req.used, 'used');
        v.avail = n(req.avail, 'avail');
        v.logUsed = req.flags & 1 ? n(req.log, 'log') : -1;
        v.addrSet = true;
        if (v.started) await this.restartQueue(req.index);
        else await this.maybeStart(req.index);
        return null;
      }
      case 'GET_VRING_BASE': {
        const v = this.ring(req.index);
        let base = v.base;
        if (v.started) {
          base = await this.dp.stopQueue(req.index);
          v.started = false;
        }
        v.base = base;
        // The front-end gets the kick fd back only by sending a new one.
        closeFd(v.kickFd);
        v.kickFd = -1;
        v.kicked = false;
        return encodeVringStateReply(Req.GET_VRING_BASE, req.index, base);
      }
      case 'SET_VRING_KICK': {
        const v = this.ring(req.index, req.fd);
        checkNotifyFd(req);
        if (v.started) {
          v.base = await this.dp.stopQueue(req.index);
          v.started = false;
        }
        closeFd(v.kickFd);
        v.kickFd = req.nofd ? -1 : req.fd!;
        v.kicked = true;
        await this.maybeStart(req.index);
        return null;
      }
      case 'SET_VRING_CALL': {
        const v = this.ring(req.index, req.fd);
        checkNotifyFd(req);
        const old = v.callFd;
        v.callFd = req.nofd ? -1 : req.fd!;
        if (v.started) await this.dp.setCall(req.index, v.callFd);
        closeFd(old);
        return null;
      }
      case 'SET_VRING_ERR': {
        const v = this.ring(req.index, req.fd);
        checkNotifyFd(req);
        closeFd(v.errFd);
        v.errFd = req.nofd ? -1 : req.fd!;
        return null;
      }
      case 'SET_VRING_ENABLE': {
        const v = this.ring(req.index);
        v.enabled = req.enable;
        if (v.started) await this.dp.setEnabled(req.index, req.enable);
        return null;
      }
      case 'SEND_RARP':
        this.guestMac = req.mac.slice(0, 6);
        await this.dp.injectFromGuest(rarpFrame(this.guestMac));
        return null;
      case 'NET_SET_MTU': {
        if (req.mtu < 68n || req.mtu > 65535n) throw new DeviceError(`NET_SET_MTU ${req.mtu} out of range 68-65535`);
        this.mtu = Number(req.mtu);
        return null;
      }
      case 'SET_STATUS': this.status = req.status & 0xff; return null;
      case 'GET_STATUS': return encodeU64Reply(Req.GET_STATUS, BigInt(this.status));
      case 'GET_CONFIG': return encodeConfigErrorReply();
      case 'SET_VRING_ENDIAN':
        if (req.bigEndian) throw new DeviceError('big-endian (legacy cross-endian) rings are not supported');
        return null;
      case 'SET_BACKEND_REQ_FD':
        closeFd(req.fd);
        return null;
      default:
        requestFds(req).forEach(closeFd);
        throw new DeviceError(`request ${req.kind === 'UNKNOWN' ? `id ${req.request}` : req.kind} is not supported by this back-end`);
    }
  }

  /** Encodes the REPLY_ACK answer owed for `req`, if any. */
  ack(req: Request, ok: boolean, request: number): Uint8Array | null {
    return req.needReply && this.replyAck ? encodeAck(request, ok) : null;
  }

  private ring(index: number, fd?: number): Vring {
    const v = this.vrings[index];
    if (!v) {
      if (fd !== undefined) closeFd(fd);
      throw new DeviceError(`ring index ${index} out of range (device has ${this.vrings.length} rings)`);
    }
    return v;
  }

  private spec(index: number): QueueSpec {
    const v = this.vrings[index]!;
    const mrg = hasFeature(this.features, Feature.MRG_RXBUF);
    const v1 = hasFeature(this.features, Feature.VERSION_1);
    return {
      size: v.num, desc: v.desc, avail: v.avail, used: v.used, lastAvail: v.base,
      eventIdx: hasFeature(this.features, Feature.EVENT_IDX),
      indirect: hasFeature(this.features, Feature.INDIRECT_DESC),
      mrgRxbuf: mrg,
      hdrLen: v1 || mrg ? 12 : 10,
      kickFd: v.kickFd, callFd: v.callFd,
      enabled: v.enabled || !hasFeature(this.features, Feature.PROTOCOL_FEATURES),
      logAll: hasFeature(this.features, Feature.LOG_ALL),
      logUsedGpa: v.logUsed,
      sendOffloads: offloadBits(this.features, Feature.CSUM, Feature.HOST_TSO4, Feature.HOST_TSO6, Feature.HOST_ECN),
      recvOffloads: offloadBits(this.features, Feature.GUEST_CSUM, Feature.GUEST_TSO4, Feature.GUEST_TSO6, Feature.GUEST_ECN),
    };
  }

  /** A ring starts once it has a size, addresses inside the memory table and a kick (fd or NOFD). */
  private async maybeStart(index: number): Promise<void> {
    const v = this.vrings[index]!;
    if (v.started || !v.kicked || !v.addrSet || v.num === 0 || this.mem.regions.length === 0) return;
    const n = v.num;
    if (!this.mem.containsUser(v.desc, 16 * n) || !this.mem.containsUser(v.avail, 6 + 2 * n) || !this.mem.containsUser(v.used, 6 + 8 * n)) {
      throw new DeviceError(`ring ${index}: ring addresses are outside the memory table`);
    }
    await this.dp.startQueue(index, this.spec(index));
    v.started = true;
  }

  private async restartQueue(index: number): Promise<void> {
    const v = this.vrings[index]!;
    v.base = await this.dp.stopQueue(index);
    v.started = false;
    await this.maybeStart(index);
  }

  /** Features changed: running rings pick up the new layout. */
  private async restartRunning(): Promise<void> {
    for (let i = 0; i < this.vrings.length; i++) if (this.vrings[i]!.started) await this.restartQueue(i);
  }

  /**
   * A new table: stop running rings (keeping their positions), remap in the
   * data path, restart. Old fds are closed only after the remap.
   */
  private async replaceMemory(regions: MemoryTable['regions'], keepOld = false, dropFds: number[] = []): Promise<void> {
    const running = this.vrings.map((v, i) => (v.started ? i : -1)).filter((i) => i >= 0);
    for (const i of running) {
      this.vrings[i]!.base = await this.dp.stopQueue(i);
      this.vrings[i]!.started = false;
    }
    const oldFds = keepOld ? dropFds : this.mem.fds();
    // From here the new fds belong to the table (closed on reset), whatever happens.
    this.mem.regions = regions;
    try {
      await this.dp.setMemory(regions);
    } catch (e) {
      // e.g. an fd that cannot be mapped: the front-end is broken or hostile.
      throw new DeviceError(`mapping the memory table failed: ${(e as Error).message}`, true);
    } finally {
      oldFds.forEach(closeFd);
    }
    for (const i of running) await this.maybeStart(i);
    for (let i = 0; i < this.vrings.length; i++) if (!running.includes(i)) await this.maybeStart(i);
  }

  /** The virtio feature bits the front-end acked (SET_FEATURES); 0 before that and after a reset. */
  get negotiatedFeatures(): bigint { return this.features; }

  async reset(): Promise<void> {
    await this.dp.reset();
    for (const v of this.vrings) {
      closeFd(v.kickFd);
      closeFd(v.callFd);
      closeFd(v.errFd);
      Object.assign(v, newVring());
    }
    this.mem.closeAll();
    this.features = 0n;
    this.status = 0;
  }

  /** Connection gone: release everything. */
  async close(): Promise<void> {
    this.closed = true;
    await this.reset();
  }

  describe(): Record<string, unknown> {
    return {
      owner: this.owner,
      features: `0x${this.features.toString(16)}`,
      protocolFeatures: `0x${this.protocolFeatures.toString(16)}`,
      regions: this.mem.regions.length,
      rings: this.vrings.map((v, i) => ({ index: i, num: v.num, started: v.started, enabled: v.enabled })),
      mtu: this.mtu,
      status: this.status,
    };
  }
}

/** The same guest-physical range at the same front-end address. */
function sameRegion(a: { guestPhysAddr: number; size: number; userAddr: number }, b: { guestPhysAddr: number; size: number; userAddr: number }): boolean {
  return a.guestPhysAddr === b.guestPhysAddr && a.size === b.size && a.userAddr === b.userAddr;
}

/** RARP announce from the guest's MAC, so switches learn where it moved (SEND_RARP). */
function rarpFrame(mac: Uint8Array): Uint8Array {
  const f = new Uint8Array(60);
  f.fill(0xff, 0, 6);
  f.set(mac.subarray(0, 6), 6);
  f[12] = 0x80; f[13] = 0x35; // ETH_P_RARP
  f[14] = 0; f[15] = 1; // htype ethernet
  f[16] = 0x08; f[17] = 0x00; // ptype IPv4
  f[18] = 6; f[19] = 4;
  f[20] = 0; f[21] = 3; // reverse request
  f.set(mac.subarray(0, 6), 22);
  f.set(mac.subarray(0, 6), 32);
  return f;
}
