// `vhost-user serve`: a learning switch whose ports are vhost-user sockets,
// with an optional uplink (a host device or a tap on a bridge). Ports are
// added at start (--socket) or at run time (the control socket); each one
// listens, or with `client` connects to a front-end that listens and retries
// until it can. Connection state changes are published as events.
import { closeFd } from '../sys/libc.js';
import { unwatch, watchReadable } from '../sys/poller.js';
import { acceptUnix, connectUnix } from '../sys/unix-socket.js';
import { UsageError } from '../errors.js';
import { Connection } from './device/connection.js';
import { VhostUserNetDevice } from './device/device.js';
import type { PortDataplane, PortStats, QueueSpec } from './dataplane/api.js';
import { DataplaneWorker, type PollMode } from './dataplane/client.js';
import { UPLINK_STATS_ID, type MacEntry } from './dataplane/commands.js';
import { EventBus } from './events.js';
import type { PortModeName } from './switch/forwarding.js';
import { closeOwned, listenOwned, type OwnedSocket, type SocketAccess } from './socket-path.js';
import { openUplink, type Uplink } from './uplink.js';

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
  socketAccess?: SocketAccess;
  allowUnsealedMemory?: boolean;
  log?: (msg: string) => void;
}

export interface PortRequest { socket: string; client?: boolean; mode?: PortModeName }

export interface PortInfo {
  port: number;
  socket: string;
  client: boolean;
  mode: PortModeName;
  connected: boolean;
  ready: boolean;
  stats: PortStats;
}

interface Port {
  id: number;
  path: string;
  client: boolean;
  mode: PortModeName;
  listen: OwnedSocket | null;
  conn: Connection | null;
  retry: NodeJS.Timeout | null;
  removed: boolean;
  started: Set<number>;
  ready: boolean;
}

export class VhostUserServer {
  private readonly ports = new Map<number, Port>();
  private nextId = 0;
  private readonly worker: DataplaneWorker;
  private readonly log: (msg: string) => void;
  private uplink: Uplink | null = null;
  private stopping = false;
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
      this.uplink = openUplink({ dev: this.opts.uplink, bridge: this.opts.bridge });
      if (this.uplink) {
        await this.worker.setUplink(this.uplink.fd, this.uplink.rings);
        this.log(`uplink: ${this.uplink.kind === 'tap' ? `tap ${this.uplink.ifname} on bridge ${this.uplink.device}` : `packet socket on ${this.uplink.device}`}`);
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
    const port: Port = {
      id: this.nextId++, path: req.socket, client: req.client ?? this.opts.client ?? false, mode: req.mode ?? this.opts.mode ?? 'veb',
      listen: null, conn: null, retry: null, removed: false, started: new Set(), ready: false,
    };
    await this.worker.addPort(port.id, this.queuePairs, port.mode);
    try {
      if (!port.client) this.listen(port);
    } catch (e) {
      await this.worker.removePort(port.id);
      throw e;
    }
    this.ports.set(port.id, port);
    this.log(`port ${port.id}: ${port.path} (${port.mode}${port.client ? ', client' : ''})`);
    this.events.emit({ event: 'port-added', port: port.id, socket: port.path, client: port.client, mode: port.mode });
    if (port.client) this.connect(port);
    return port.id;
  }

  async removePort(id: number): Promise<void> {
    const port = this.ports.get(id);
    if (!port) throw new UsageError(`no port ${id}`, "'list' shows the ports");
    port.removed = true;
    this.ports.delete(id);
    await this.closePort(port);
    await this.worker.removePort(id);
    this.events.emit({ event: 'port-removed', port: id, socket: port.path });
  }

  async setMode(id: number, mode: PortModeName): Promise<void> {
    const port = this.ports.get(id);
    if (!port) throw new UsageError(`no port ${id}`, "'list' shows the ports");
    await this.worker.setMode(id, mode);
    port.mode = mode;
  }

  portBySocket(socket: string): number | undefined {
    for (const p of this.ports.values()) if (p.path === socket) return p.id;
    return undefined;
  }

  private listen(port: Port): void {
    port.listen = listenOwned(port.path, this.opts.socketAccess);
    const lfd = port.listen.fd;
    watchReadable(lfd, () => {
      for (let fd = acceptUnix(lfd); fd >= 0; fd = acceptUnix(lfd)) {
        if (port.conn || port.removed) {
          // vhost-user is one front-end per socket; a second one would fight over the rings.
          this.log(`port ${port.id}: refusing a second front-end while one is connected`);
          closeFd(fd);
          continue;
        }
        this.attach(port, fd);
      }
    });
  }

  private connect(port: Port): void {
    port.retry = null;
    if (this.stopping || port.removed) return;
    let fd: number;
    try {
      fd = connectUnix(port.path);
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
      queuePairs: this.queuePairs, allowUnsealedMemory: this.opts.allowUnsealedMemory ?? false,
    });
    conn = new Connection(fd, device, (m) => this.log(`port ${port.id}: ${m}`));
    port.conn = conn;
    port.ready = false;
    port.started.clear();
    this.log(`port ${port.id}: front-end connected`);
    this.events.emit({ event: 'connected', port: port.id, socket: port.path });
    conn.start();
    const c = conn;
    void conn.done.then((why) => {
      if (port.conn === c) {
        port.conn = null;
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

  async list(): Promise<PortInfo[]> {
    await this.worker.refreshStats();
    return [...this.ports.values()].map((p) => ({
      port: p.id, socket: p.path, client: p.client, mode: p.mode, connected: p.conn !== null, ready: p.ready, stats: this.worker.statsOf(p.id),
    }));
  }

  macs(): Promise<MacEntry[]> { return this.worker.macs(); }

  uplinkInfo(): { kind: string; device: string; ifname: string; stats: PortStats } | null {
    const u = this.uplink;
    return u ? { kind: u.kind, device: u.device, ifname: u.ifname, stats: this.worker.statsOf(UPLINK_STATS_ID) } : null;
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
