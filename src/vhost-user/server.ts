// `vhost-user serve`: a learning switch whose ports are vhost-user sockets,
// with an optional uplink (a host device or a tap on a bridge). Ports are
// added at start (--socket) or at run time (the control socket); each one
// listens, or with `client` connects to a front-end that listens and retries
// until it can. Connection state changes are published as events. Every port
// has an owner: its socket is the owner's, and a front-end that is neither the
// owner nor root is turned away (tenancy.ts decides who may do what).
import { closeFd } from '../sys/libc.js';
import { unwatch, watchReadable } from '../sys/poller.js';
import { acceptUnix, connectUnixNonBlocking } from '../sys/unix-socket.js';
import { peerCred } from '../sys/unix-fd.js';
import { UsageError } from '../errors.js';
import type { LogLevel } from '../log.js';
import { Connection } from './device/connection.js';
import { VhostUserNetDevice } from './device/device.js';
import type { PortDataplane, PortStats, QueueSpec } from './dataplane/api.js';
import { DataplaneWorker, type PollMode } from './dataplane/client.js';
import { UPLINK_STATS_ID, type MacEntry } from './dataplane/commands.js';
import { EventBus } from './events.js';
import type { PortModeName } from './switch/forwarding.js';
import { closeOwned, listenForOwner, type OwnedSocket, type SocketAccess } from './socket-path.js';
import { describeOwner, frontEndAllowed, isAdmin, type Owner } from './tenancy.js';
import type { MemoryLimits } from './device/memory-table.js';
import { MapBudget, MAP_BUDGET, SHARED_MAP_BUDGET } from './device/map-budget.js';
import type { UplinkTx } from './config.js';
import { openUplink, type Uplink } from './uplink.js';

// How long `list` waits for fresh counters from a busy data path before answering with the last ones.
const FRESH_WAIT_MS = 1000;

export interface ServeOptions {
  sockets: string[];
  client?: boolean;
  /** Uplink through a tap of ours on this bridge. */
  bridge?: string;
  /** Uplink through an AF_PACKET socket on this device. */
  uplink?: string;
  /** Default mode of ports (veb). */
  mode?: PortModeName;
  queuePairs?: number;
  poll?: PollMode;
  /** Mode and group of root-configured ports' sockets (--socket-mode, --socket-group). */
  socketAccess?: SocketAccess;
  /** Owner of --socket ports and of ports root adds without naming one (default: the switch's own uid/gid). */
  defaultOwner?: Owner;
  allowUnsealedMemory?: boolean;
  /** Offer checksum/TSO/ECN offloads to front-ends (default true). */
  offloads?: boolean;
  /** How `uplink` frames leave (config.ts UplinkTx; default auto). */
  uplinkTx?: UplinkTx;
  /** Bounds on each port's guest memory table, checked before anything is mapped. */
  memoryLimits?: MemoryLimits;
  /** Log lines; `level` is absent for info (the default) and given for the rest. */
  log?: (msg: string, level?: LogLevel) => void;
}

export interface PortRequest {
  socket: string;
  client?: boolean;
  mode?: PortModeName;
  /** The port's owner (default: ServeOptions.defaultOwner). */
  owner?: Owner;
  /** Asked for by a delegated (non-root) control client: its own path rules, mode 0600. */
  byTenant?: boolean;
}

/** `tx`: how frames leave (uplink.ts txPath), for a packet socket. */
export interface UplinkInfo { port: 'uplink'; kind: string; device: string; ifname: string; tx?: string; stats: PortStats }
export type SwitchMac = Omit<MacEntry, 'port'> & { port: number | 'uplink' };

export interface PortInfo {
  port: number;
  socket: string;
  client: boolean;
  mode: PortModeName;
  connected: boolean;
  ready: boolean;
  owner: Owner;
  /** Virtio feature bits the connected front-end acked, as hex ("0x0" with none connected): which offloads it took. */
  features: string;
  stats: PortStats;
}

interface Port {
  id: number;
  path: string;
  client: boolean;
  mode: PortModeName;
  owner: Owner;
  /** Permission bits of the socket file (decides whether the owner's group may connect). */
  sockMode: number;
  byTenant: boolean;
  listen: OwnedSocket | null;
  conn: Connection | null;
  device: VhostUserNetDevice | null;
  retry: NodeJS.Timeout | null;
  removed: boolean;
  started: Set<number>;
  ready: boolean;
}

export class VhostUserServer {
  private readonly ports = new Map<number, Port>();
  private nextId = 0;
  private readonly worker: DataplaneWorker;
  private readonly log: (msg: string, level?: LogLevel) => void;
  private uplink: Uplink | null = null;
  private stopping = false;
  /** Per owner uid: how much guest memory its ports may map how often (root's own ports are not bounded). */
  private readonly budgets = new Map<number, MapBudget>();
  private readonly sharedBudget = new MapBudget(SHARED_MAP_BUDGET.capacity, SHARED_MAP_BUDGET.perSecond);
  private lastMacs: MacEntry[] = [];
  readonly events = new EventBus();

  constructor(private readonly opts: ServeOptions) {
    this.log = opts.log ?? (() => undefined);
    this.worker = new DataplaneWorker(opts.poll ?? 'event');
    this.worker.onMacLearned = ({ mac, port, moved }) => {
      const p = this.ports.get(port);
      this.events.emit({ event: 'mac-learned', port: port === UPLINK_STATS_ID ? 'uplink' : port, socket: port === UPLINK_STATS_ID ? this.uplink?.device ?? null : p?.path ?? null, mac, moved });
    };
  }

  get queuePairs(): number { return this.opts.queuePairs ?? 1; }

  async start(): Promise<void> {
    try {
      this.uplink = openUplink({ dev: this.opts.uplink, bridge: this.opts.bridge, offloads: this.opts.offloads ?? true, tx: this.opts.uplinkTx ?? 'auto' });
      if (this.uplink) {
        const u = this.uplink;
        await this.worker.setUplink(u.fd, u.rings, u.vnetHdr, u.senderFd, u.xsk);
        this.log(`uplink: ${u.kind === 'tap' ? `tap ${u.ifname} on bridge ${u.device}` : `packet socket on ${u.device}, sending through ${u.txPath}`}`);
      }
      for (const s of this.opts.sockets) await this.addPort({ socket: s, client: this.opts.client ?? false });
    } catch (e) {
      await this.stop();
      throw e;
    }
  }

  /** Adds a port (at start or at run time); returns its id. */
  async addPort(req: PortRequest): Promise<number> {
    if (this.stopping) throw new Error('the switch is stopping');
    for (const p of this.ports.values()) if (p.path === req.socket) throw new UsageError(`socket ${req.socket} is already port ${p.id}`, 'each port needs its own socket path');
    const owner = req.owner ?? this.defaultOwner;
    const port: Port = {
      id: this.nextId++, path: req.socket, client: req.client ?? this.opts.client ?? false, mode: req.mode ?? this.opts.mode ?? 'veb',
      owner, sockMode: req.byTenant ? 0o600 : this.rootSocketMode, byTenant: req.byTenant ?? false,
      listen: null, conn: null, device: null, retry: null, removed: false, started: new Set(), ready: false,
    };
    await this.worker.addPort(port.id, this.queuePairs, port.mode);
    try {
      if (!port.client) this.listen(port);
    } catch (e) {
      await this.worker.removePort(port.id);
      throw e;
    }
    this.ports.set(port.id, port);
    this.log(`port ${port.id}: ${port.path} (${port.mode}${port.client ? ', client' : ''}, owner ${describeOwner(owner)})`);
    this.events.emit({ event: 'port-added', port: port.id, socket: port.path, client: port.client, mode: port.mode, owner });
    if (port.client) this.connect(port);
    return port.id;
  }

  async removePort(id: number): Promise<void> {
    const port = this.ports.get(id);
    if (!port || port.removed) throw new UsageError(`no port ${id}`, "'list' shows the ports");
    port.removed = true;
    // Known until closed: its last events (disconnected) still reach its owner's event stream.
    try {
      await this.closePort(port);
    } finally {
      this.ports.delete(id);
    }
    await this.worker.removePort(id);
    this.log(`port ${id}: removed (${port.path})`);
    this.events.emit({ event: 'port-removed', port: id, socket: port.path, owner: port.owner });
  }

  async setMode(id: number, mode: PortModeName): Promise<void> {
    const port = this.ports.get(id);
    if (!port) throw new UsageError(`no port ${id}`, "'list' shows the ports");
    await this.worker.setMode(id, mode);
    port.mode = mode;
  }

  private budgetOf(uid: number): MapBudget {
    let b = this.budgets.get(uid);
    if (!b) this.budgets.set(uid, b = new MapBudget(MAP_BUDGET.capacity, MAP_BUDGET.perSecond, undefined, this.sharedBudget));
    return b;
  }

  /** Ports owned by `uid` (a delegated tenant's count against its bound). */
  portsOwnedBy(uid: number): number {
    let n = 0;
    for (const p of this.ports.values()) if (p.owner.uid === uid) n++;
    return n;
  }

  /** Owner of port `id` (undefined: no such port). */
  ownerOf(id: number): Owner | undefined { return this.ports.get(id)?.owner; }

  private get defaultOwner(): Owner {
    return this.opts.defaultOwner ?? { uid: process.geteuid?.() ?? 0, gid: this.opts.socketAccess?.gid ?? process.getegid?.() ?? 0 };
  }

  /** --socket-mode, else 0660 when a group was given (the group is meant to connect), else 0600. */
  private get rootSocketMode(): number {
    const a = this.opts.socketAccess;
    return a?.mode ?? (a?.gid !== undefined ? 0o660 : 0o600);
  }

  portBySocket(socket: string): number | undefined {
    for (const p of this.ports.values()) if (p.path === socket) return p.id;
    return undefined;
  }

  private listen(port: Port): void {
    port.listen = listenForOwner(port.path, { owner: port.owner, mode: port.sockMode, byTenant: port.byTenant });
    const lfd = port.listen.fd;
    watchReadable(lfd, () => {
      for (let fd = acceptUnix(lfd); fd >= 0; fd = acceptUnix(lfd)) {
        if (port.conn || port.removed) {
          // vhost-user is one front-end per socket; a second one would fight over the rings.
          this.log(`port ${port.id}: refusing a second front-end while one is connected`, 'warn');
          closeFd(fd);
          continue;
        }
        if (!this.admitted(port, fd)) continue;
        this.attach(port, fd);
      }
    });
  }

  /** A front-end must be the port's owner (or root): anyone else is closed on, logged and reported. */
  private admitted(port: Port, fd: number): boolean {
    let peer;
    try {
      peer = peerCred(fd);
    } catch (e) {
      this.log(`port ${port.id}: refusing a front-end whose credentials cannot be read (${(e as Error).message})`);
      closeFd(fd);
      return false;
    }
    if (frontEndAllowed(peer, port.owner, port.sockMode)) return true;
    const reason = `uid ${peer.uid} is not the port's owner (uid ${port.owner.uid}) nor root`;
    this.log(`port ${port.id}: refused a front-end (pid ${peer.pid}): ${reason}`);
    closeFd(fd);
    this.events.emit({ event: 'refused', port: port.id, socket: port.path, uid: peer.uid, gid: peer.gid, pid: peer.pid, reason });
    return false;
  }

  private connect(port: Port): void {
    port.retry = null;
    if (this.stopping || port.removed) return;
    let fd: number;
    try {
      // Never a blocking connect: a listener with a full backlog must not freeze every port.
      fd = connectUnixNonBlocking(port.path);
    } catch {
      port.retry = setTimeout(() => this.connect(port), 100);
      return;
    }
    this.attach(port, fd);
  }

  /** The port's data path, watching its rings start and stop (the `ready` event). */
  private watchedDataplane(port: Port, conn: () => Connection | null): PortDataplane {
    const dp = this.worker.portDataplane(port.id);
    const check = (): void => {
      const hasRx = [...port.started].some((q) => q % 2 === 0);
      const hasTx = [...port.started].some((q) => q % 2 === 1);
      if (hasRx && hasTx && !port.ready && port.conn === conn()) {
        port.ready = true;
        this.events.emit({ event: 'ready', port: port.id, socket: port.path });
      }
    };
    return {
      ...dp,
      startQueue: async (q: number, spec: QueueSpec) => { await dp.startQueue(q, spec); port.started.add(q); check(); },
      stopQueue: async (q: number) => { const b = await dp.stopQueue(q); port.started.delete(q); return b; },
      reset: async () => { await dp.reset(); port.started.clear(); },
    };
  }

  private attach(port: Port, fd: number): void {
    let conn: Connection | null = null;
    const device = new VhostUserNetDevice(this.watchedDataplane(port, () => conn), {
      queuePairs: this.queuePairs, allowUnsealedMemory: this.opts.allowUnsealedMemory ?? false, offloads: this.opts.offloads ?? true,
      ...(this.opts.memoryLimits ? { memoryLimits: this.opts.memoryLimits } : {}),
      ...(isAdmin(port.owner.uid) ? {} : { mapBudget: this.budgetOf(port.owner.uid) }),
    });
    conn = new Connection(fd, device, (m, level) => this.log(`port ${port.id}: ${m}`, level));
    port.conn = conn;
    port.device = device;
    port.ready = false;
    port.started.clear();
    this.log(`port ${port.id}: front-end connected`);
    this.events.emit({ event: 'connected', port: port.id, socket: port.path });
    conn.start();
    const c = conn;
    void conn.done.then((why) => {
      if (port.conn === c) {
        port.conn = null;
        port.device = null;
        port.ready = false;
        port.started.clear();
      }
      this.events.emit({ event: 'disconnected', port: port.id, socket: port.path, reason: why });
      if (port.client && !this.stopping && !port.removed) port.retry = setTimeout(() => this.connect(port), 100);
    });
  }

  private async closePort(p: Port): Promise<void> {
    if (p.retry) clearTimeout(p.retry);
    p.retry = null;
    if (p.listen) {
      unwatch(p.listen.fd);
      closeOwned(p.listen);
      p.listen = null;
    }
    const conn = p.conn;
    conn?.close(this.stopping ? 'back-end stopping' : 'port removed');
    if (conn) await conn.done;
  }

  /**
   * The worker's answer, or after FRESH_WAIT_MS the last one it gave: a busy
   * data path (a big table being mapped) must not hold `list` for everyone.
   */
  private fresh<T>(p: Promise<T>, last: () => T): Promise<T> {
    let t: NodeJS.Timeout | undefined;
    const late = new Promise<T>((res) => { t = setTimeout(() => res(last()), FRESH_WAIT_MS); });
    return Promise.race([p.finally(() => clearTimeout(t)), late]);
  }

  async list(): Promise<PortInfo[]> {
    await this.fresh(this.worker.refreshStats(), () => undefined);
    return [...this.ports.values()].filter((p) => !p.removed).map((p) => ({
      port: p.id, socket: p.path, client: p.client, mode: p.mode, connected: p.conn !== null, ready: p.ready, owner: { ...p.owner },
      features: `0x${(p.conn ? p.device?.negotiatedFeatures ?? 0n : 0n).toString(16)}`, stats: this.worker.statsOf(p.id),
    }));
  }

  /** Learned MACs; the uplink's have `"port":"uplink"`, as in events and stats (the worker's id for it is internal). */
  async macs(): Promise<SwitchMac[]> {
    const all = await this.fresh(this.worker.macs().then((m) => (this.lastMacs = m)), () => this.lastMacs);
    return all.map((m) => ({ ...m, port: m.port === UPLINK_STATS_ID ? 'uplink' as const : m.port }));
  }

  uplinkInfo(): UplinkInfo | null {
    const u = this.uplink;
    return u ? { port: 'uplink', kind: u.kind, device: u.device, ifname: u.ifname, ...(u.kind === 'packet' ? { tx: u.txPath } : {}), stats: this.worker.statsOf(UPLINK_STATS_ID) } : null;
  }

  /** Ports, uplink and MAC table at one moment: the control socket's `list` reply. */
  async snapshot(): Promise<{ ports: PortInfo[]; uplink: UplinkInfo | null; macs: SwitchMac[] }> {
    const ports = await this.list();
    return { ports, uplink: this.uplinkInfo(), macs: await this.macs() };
  }

  /** Flat per-port counters (the format `--stats-interval` and the final line always had); the uplink's are in uplinkInfo(). */
  async stats(): Promise<Record<string, unknown>[]> {
    const ports = await this.list();
    return ports.map((p) => ({ port: p.port, socket: p.socket, mode: p.mode, connected: p.connected, ...p.stats }));
  }

  async stop(): Promise<void> {
    this.stopping = true;
    for (const p of this.ports.values()) await this.closePort(p);
    await this.worker.stop();
    // The uplink fd is closed only after the worker stopped touching it.
    this.uplink?.close();
    this.uplink = null;
  }
}
