// The control socket (`--control PATH`): a unix stream socket speaking the
// JSON lines of codec.ts, served with Node's net module (no fds cross it).
// Requests on one connection are answered one at a time, in order. A client
// that sends garbage gets an error reply; one that sends an endless line or
// does not read its event stream is disconnected, never buffered without end.
// Each connection's uid (SO_PEERCRED) decides what it may do: root does
// anything; a delegated user (--control-group) only adds, changes, removes
// and sees its own ports, and never makes the switch connect() anywhere.
import { lstatSync } from 'node:fs';
import { createServer, type Server, type Socket } from 'node:net';
import { SetupError } from '../../errors.js';
import { peerCred } from '../../sys/unix-fd.js';
import { listenOwned, removeIfOurs, type OwnedSocket, type SocketAccess } from '../socket-path.js';
import { actRefusal, isAdmin, ownerForAdd, type Peer } from '../tenancy.js';
import type { Stamped } from '../events.js';
import type { VhostUserServer } from '../server.js';
import { controlRequest } from './sync-client.js';
import { ControlError, encodeLine, errorReply, LineSplitter, okReply, parseRequest, type ControlRequest } from './codec.js';

/** Ports one delegated user may have at once (each costs us fds and a data-path slot). */
export const DEFAULT_MAX_TENANT_PORTS = 16;

/**
 * Refuses a --control path another switch serves, before anything is set up,
 * saying so (the generic "a socket another process listens on" hides what to
 * do: talk to that switch, or stop it).
 */
export function checkControlFree(path: string): void {
  try {
    if (!lstatSync(path).isSocket()) return; // listenOwned refuses it with its own message
  } catch { return; }
  let reply: { ok: boolean } | null = null;
  try { reply = controlRequest(path, { op: 'list' }, 3000); } catch { return; }
  if (reply?.ok) throw new SetupError(`another vhost-user switch already serves the control socket ${path}`, `stop it, add ports to it ('qemu-net-helper vhost-user add-port SOCKET --control ${path}'), or pass another --control`);
}

export interface ControlOptions {
  /** Ports one delegated (non-root) user may have at once (default DEFAULT_MAX_TENANT_PORTS). */
  maxTenantPorts?: number;
  /** `save`: writes the configuration file and says what it wrote; absent when the switch has none (`--config none`). */
  save?: () => Promise<{ file: string; ports: number }>;
}

// Bytes of events we hold for a subscriber that does not read before dropping it.
const MAX_BACKLOG = 1 << 20;

export class ControlServer {
  private server: Server | null = null;
  private owned: OwnedSocket | null = null;
  private readonly clients = new Set<Socket>();
  private readonly adding = new Map<number, number>();

  private readonly maxTenantPorts: number;

  constructor(private readonly sw: VhostUserServer, private readonly log: (m: string) => void, private readonly opts: ControlOptions = {}) {
    this.maxTenantPorts = opts.maxTenantPorts ?? DEFAULT_MAX_TENANT_PORTS;
  }

  async start(path: string, access?: SocketAccess): Promise<void> {
    this.owned = listenOwned(path, access, '--control');
    // allowHalfOpen: a client that half-closes after its request (`nc -N`,
    // shutdown(SHUT_WR)) still gets its replies; we end our side once they are sent.
    const server = createServer({ allowHalfOpen: true }, (sock) => this.serve(sock));
    this.server = server;
    await new Promise<void>((resolve, reject) => {
      server.once('error', reject);
      server.listen({ fd: this.owned!.fd }, () => { server.off('error', reject); resolve(); });
    });
  }

  private serve(sock: Socket): void {
    let peer: Peer;
    try {
      const fd = (sock as unknown as { _handle?: { fd?: number } })._handle?.fd;
      if (typeof fd !== 'number' || fd < 0) throw new Error('no fd');
      peer = peerCred(fd);
    } catch (e) {
      this.log(`control: closing a connection whose credentials cannot be read (${(e as Error).message})`);
      sock.destroy();
      return;
    }
    const admin = isAdmin(peer.uid);
    this.clients.add(sock);
    const lines = new LineSplitter();
    const queue: string[] = [];
    let busy = false;
    let unsubscribe: (() => void) | null = null;
    let inputEnded = false;
    const send = (s: string): void => {
      if (sock.destroyed) return;
      if (sock.writableLength > MAX_BACKLOG) {
        this.log('control: a client does not read its replies or events; disconnecting it');
        sock.destroy();
        return;
      }
      sock.write(s);
    };
    const pump = async (): Promise<void> => {
      if (busy) return;
      busy = true;
      while (queue.length && !sock.destroyed) {
        const line = queue.shift()!;
        let req: ControlRequest;
        try {
          req = parseRequest(line);
        } catch (e) {
          send(errorReply(e instanceof ControlError ? e.id : undefined, (e as Error).message));
          continue;
        }
        if (req.op === 'events') {
          if (!unsubscribe) unsubscribe = this.sw.events.on((ev) => { if (admin || this.maySee(peer, ev)) send(encodeLine(ev)); });
          send(okReply(req.id));
          continue;
        }
        try {
          send(okReply(req.id, await this.exec(req, peer)));
        } catch (e) {
          if (e instanceof Refused) this.log(`control: refused uid ${peer.uid} (pid ${peer.pid ?? '?'}): ${e.message}`);
          send(errorReply(req.id, (e as Error).message));
        }
      }
      busy = false;
      // The client has said all it will: end once its replies are out (an
      // events subscriber keeps reading until it closes its side fully).
      if (inputEnded && !unsubscribe && !sock.destroyed) sock.end();
    };
    sock.on('data', (chunk: Buffer) => {
      try {
        queue.push(...lines.push(chunk));
      } catch (e) {
        send(errorReply(undefined, (e as Error).message));
        sock.end();
        return;
      }
      void pump();
    });
    sock.on('end', () => {
      inputEnded = true;
      if (sock.writableEnded) return; // we already hung up (an overlong line)
      // A last request without its newline still counts.
      try { queue.push(...lines.push(Buffer.from('\n'))); } catch { /* the data handler already answered */ }
      void pump();
    });
    sock.on('error', () => undefined);
    sock.on('close', () => {
      unsubscribe?.();
      this.clients.delete(sock);
    });
  }

  /** Events a delegated client sees: those of its own ports (and nothing about the uplink's traffic). */
  private maySee(peer: Peer, ev: Stamped): boolean {
    if (typeof ev.port !== 'number') return false;
    const owner = ev.event === 'port-added' || ev.event === 'port-removed' ? ev.owner : this.sw.ownerOf(ev.port);
    return owner !== undefined && owner.uid === peer.uid;
  }

  private checkMayAct(peer: Peer, id: number, what: string): void {
    const owner = this.sw.ownerOf(id);
    if (owner === undefined) return; // the server's own "no port" error follows
    const why = actRefusal(peer, owner, what);
    if (why) throw new Refused(why);
  }

  private async exec(req: Exclude<ControlRequest, { op: 'events' }>, peer: Peer): Promise<object> {
    const admin = isAdmin(peer.uid);
    switch (req.op) {
      case 'add-port': {
        if (req.client && !admin) throw new Refused('add-port: "client":true (the switch connecting to a path) is for root only');
        let owner;
        try { owner = ownerForAdd(peer, req.owner); } catch (e) { throw new Refused((e as Error).message); }
        // Adds still in flight count too: a tenant may open many connections at once.
        const adding = this.adding.get(peer.uid) ?? 0;
        if (!admin && this.sw.portsOwnedBy(peer.uid) + adding >= this.maxTenantPorts) throw new Refused(`add-port: uid ${peer.uid} has ${this.maxTenantPorts} ports already, the most one user may have (--max-ports-per-user)`);
        this.adding.set(peer.uid, adding + 1);
        let port: number;
        try {
          port = await this.sw.addPort({ socket: req.socket, client: req.client, ...(req.mode ? { mode: req.mode } : {}), ...(owner ? { owner } : {}), byTenant: !admin });
        } finally {
          const n = (this.adding.get(peer.uid) ?? 1) - 1;
          if (n > 0) this.adding.set(peer.uid, n); else this.adding.delete(peer.uid);
        }
        return { port, socket: req.socket, owner: this.sw.ownerOf(port) };
      }
      case 'remove-port': {
        const id = req.port ?? this.sw.portBySocket(req.socket!);
        if (id === undefined) throw new Error(`no port on socket ${req.socket}`);
        this.checkMayAct(peer, id, `remove-port ${id}`);
        const info = (await this.sw.list()).find((p) => p.port === id);
        await this.sw.removePort(id);
        return { port: id, socket: info?.socket ?? req.socket };
      }
      case 'set-mode':
        this.checkMayAct(peer, req.port, `set-mode ${req.port}`);
        await this.sw.setMode(req.port, req.mode);
        return { port: req.port, mode: req.mode };
      case 'list': {
        const all = await this.sw.snapshot();
        if (admin) return all;
        const ports = all.ports.filter((p) => p.owner.uid === peer.uid);
        const mine = new Set(ports.map((p) => p.port));
        return { ports, uplink: all.uplink, macs: all.macs.filter((m) => typeof m.port === 'number' && mine.has(m.port)) };
      }
      case 'save':
        // The configuration file is root's: a delegated client cannot rewrite it.
        if (!admin) throw new Refused('save: writing the switch\'s configuration file is for root only');
        if (!this.opts.save) throw new Error('this switch runs without a configuration file (--config none): nothing to save to');
        return this.opts.save();
    }
  }

  async stop(): Promise<void> {
    for (const c of this.clients) c.destroy();
    const server = this.server;
    this.server = null;
    if (server) await new Promise<void>((r) => server.close(() => r()));
    if (this.owned) removeIfOurs(this.owned);
    this.owned = null;
  }
}

/** A request this client may not make (logged with who asked). */
class Refused extends Error {}
