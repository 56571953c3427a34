// The control socket (`--control PATH`): a unix stream socket speaking the
// JSON lines of codec.ts, served with Node's net module (no fds cross it).
// Requests on one connection are answered one at a time, in order. A client
// that sends garbage gets an error reply; one that sends an endless line or
// does not read its event stream is disconnected, never buffered without end.
import { lstatSync } from 'node:fs';
import { createServer, type Server, type Socket } from 'node:net';
import { SetupError } from '../../errors.js';
import { listenOwned, removeIfOurs, type OwnedSocket, type SocketAccess } from '../socket-path.js';
import type { VhostUserServer } from '../server.js';
import { controlRequest } from './sync-client.js';
import { ControlError, encodeLine, errorReply, LineSplitter, okReply, parseRequest, type ControlRequest } from './codec.js';

// Bytes of events we hold for a subscriber that does not read before dropping it.
const MAX_BACKLOG = 1 << 20;

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

export class ControlServer {
  private server: Server | null = null;
  private owned: OwnedSocket | null = null;
  private readonly clients = new Set<Socket>();

  /** `save`: writes the configuration file and says what it wrote; absent when the switch has none (`--config none`). */
  constructor(private readonly sw: VhostUserServer, private readonly log: (m: string) => void, private readonly save?: () => Promise<{ file: string; ports: number }>) {}

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
          if (!unsubscribe) unsubscribe = this.sw.events.on((ev) => send(encodeLine(ev)));
          send(okReply(req.id));
          continue;
        }
        try {
          send(okReply(req.id, await this.exec(req)));
        } catch (e) {
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

  private async exec(req: Exclude<ControlRequest, { op: 'events' }>): Promise<object> {
    switch (req.op) {
      case 'add-port': {
        const port = await this.sw.addPort({ socket: req.socket, client: req.client, ...(req.mode ? { mode: req.mode } : {}) });
        return { port, socket: req.socket };
      }
      case 'remove-port': {
        const id = req.port ?? this.sw.portBySocket(req.socket!);
        if (id === undefined) throw new Error(`no port on socket ${req.socket}`);
        const info = (await this.sw.list()).find((p) => p.port === id);
        await this.sw.removePort(id);
        return { port: id, socket: info?.socket ?? req.socket };
      }
      case 'set-mode':
        await this.sw.setMode(req.port, req.mode);
        return { port: req.port, mode: req.mode };
      case 'list': return this.sw.snapshot();
      case 'save':
        if (!this.save) throw new Error('this switch runs without a configuration file (--config none): nothing to save to');
        return this.save();
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
