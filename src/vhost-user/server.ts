// `vhost-user serve`: one vhost-user port per socket, each port's guest
// traffic going to a tap on a bridge, to the other port (two sockets, no host
// side: the VM-to-VM patch), or nowhere (a sink). Listens by default; with
// `client` it connects to a front-end that listens and retries until it can.
import { lstatSync, unlinkSync } from 'node:fs';
import { bridgeAddPort, ifIndex, setUp } from '../sys/netdev.js';
import { closeFd } from '../sys/libc.js';
import { createTap } from '../sys/tun.js';
import { unwatch, watchReadable } from '../sys/poller.js';
import { acceptUnix, connectUnix, listenUnix, setNonBlocking } from '../sys/unix-socket.js';
import { NotFoundError } from '../errors.js';
import { Connection } from './device/connection.js';
import { VhostUserNetDevice } from './device/device.js';
import { DataplaneWorker, type PeerSpec, type PollMode } from './dataplane/pool.js';

export interface ServeOptions {
  sockets: string[];
  client?: boolean;
  /** Give each port a tap on this bridge. */
  bridge?: string;
  queuePairs?: number;
  poll?: PollMode;
  log?: (msg: string) => void;
}

interface Port {
  id: number;
  path: string;
  listenFd: number;
  conn: Connection | null;
  tapFd: number;
  tapName: string | null;
  retry: NodeJS.Timeout | null;
}

export class VhostUserServer {
  private readonly ports: Port[] = [];
  private readonly worker: DataplaneWorker;
  private readonly log: (msg: string) => void;
  private stopping = false;

  constructor(private readonly opts: ServeOptions) {
    this.log = opts.log ?? (() => undefined);
    this.worker = new DataplaneWorker(opts.poll ?? 'event');
  }

  get queuePairs(): number { return this.opts.queuePairs ?? 1; }

  async start(): Promise<void> {
    const { sockets, bridge } = this.opts;
    if (bridge && ifIndex(bridge) === 0) throw new NotFoundError(`bridge '${bridge}' does not exist`, `create it ('ip link add ${bridge} type bridge') or pass another --br`);
    try {
      for (let i = 0; i < sockets.length; i++) {
        const port: Port = { id: i, path: sockets[i]!, listenFd: -1, conn: null, tapFd: -1, tapName: null, retry: null };
        this.ports.push(port);
        let peer: PeerSpec = { kind: 'none' };
        if (bridge) {
          const tap = createTap({ name: 'vhu%d' });
          setNonBlocking(tap.fd, true);
          port.tapFd = tap.fd;
          port.tapName = tap.name;
          bridgeAddPort(bridge, tap.name);
          setUp(tap.name);
          peer = { kind: 'tap', fd: tap.fd };
          this.log(`port ${i}: ${port.path} <-> tap ${tap.name} on bridge ${bridge}`);
        } else if (sockets.length === 2) {
          peer = { kind: 'port', port: 1 - i };
          this.log(`port ${i}: ${port.path} <-> port ${1 - i}`);
        } else {
          this.log(`port ${i}: ${port.path} (no host side: frames from the guest are dropped)`);
        }
        await this.worker.addPort(i, this.queuePairs, peer);
        if (this.opts.client) this.connect(port);
        else this.listen(port);
      }
    } catch (e) {
      await this.stop();
      throw e;
    }
  }

  private listen(port: Port): void {
    try {
      if (lstatSync(port.path).isSocket()) unlinkSync(port.path);
    } catch { /* nothing there */ }
    port.listenFd = listenUnix(port.path);
    watchReadable(port.listenFd, () => {
      for (let fd = acceptUnix(port.listenFd); fd >= 0; fd = acceptUnix(port.listenFd)) {
        if (port.conn) {
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
    if (this.stopping) return;
    let fd: number;
    try {
      fd = connectUnix(port.path);
    } catch {
      port.retry = setTimeout(() => this.connect(port), 100);
      return;
    }
    this.attach(port, fd);
  }

  private attach(port: Port, fd: number): void {
    const device = new VhostUserNetDevice(this.worker.portDataplane(port.id), { queuePairs: this.queuePairs });
    const conn = new Connection(fd, device, (m) => this.log(`port ${port.id}: ${m}`));
    port.conn = conn;
    this.log(`port ${port.id}: front-end connected`);
    conn.start();
    void conn.done.then(() => {
      if (port.conn === conn) port.conn = null;
      if (this.opts.client && !this.stopping) port.retry = setTimeout(() => this.connect(port), 100);
    });
  }

  async stats(): Promise<Record<string, unknown>[]> {
    await this.worker.refreshStats();
    return this.ports.map((p) => ({ port: p.id, socket: p.path, connected: p.conn !== null, tap: p.tapName, ...this.worker.statsOf(p.id) }));
  }

  async stop(): Promise<void> {
    this.stopping = true;
    for (const p of this.ports) {
      if (p.retry) clearTimeout(p.retry);
      p.conn?.close('back-end stopping');
      if (p.conn) await p.conn.done;
      if (p.listenFd >= 0) {
        unwatch(p.listenFd);
        closeFd(p.listenFd);
        p.listenFd = -1;
        try { unlinkSync(p.path); } catch { /* already gone */ }
      }
    }
    await this.worker.stop();
    // Taps are closed only after the worker stopped touching their fds.
    for (const p of this.ports) {
      closeFd(p.tapFd);
      p.tapFd = -1;
    }
  }
}
