// The broker: a root daemon on a unix socket anyone may connect to (mode
// 0666: the broker decides, not the file mode). One request per connection,
// served one at a time (setup is synchronous and shares kernel state). It owns
// what it makes: it watches each endpoint's owner with a pidfd and releases
// the endpoint when QEMU exits; restarted after a crash, it re-reads its
// records, releases what died meanwhile and watches the rest again.
import { chmodSync, lstatSync, mkdirSync, unlinkSync } from 'node:fs';
import { connect, createServer, type Server, type Socket } from 'node:net';
import { dirname } from 'node:path';
import { ConfigError, describeError } from '../errors.js';
import { closeFd } from '../sys/libc.js';
import { gcAll } from '../lifecycle/gc.js';
import { watchEndpoint } from '../lifecycle/watcher.js';
import { lifetimeOf, listEndpoints } from '../state/endpoints.js';
import { checkStateDir } from '../state/state-dir.js';
import { handle, type BrokerConfig } from './handle.js';
import type { BrokerMetrics } from './metrics.js';
import { identify } from './peer.js';
import { BrokerProtocolError, decodeRequest, encodeReply, MAX_REQUEST_BYTES } from './protocol.js';

/** A client that has not sent its request by then is dropped. */
const REQUEST_TIMEOUT_MS = 10_000;

export interface BrokerOptions extends BrokerConfig {
  /** Socket path (ignored under socket activation). */
  socket: string;
  log: (line: string) => void;
  env?: NodeJS.ProcessEnv;
  /** Counted when given (`daemon --metrics`). */
  metrics?: BrokerMetrics;
}

export interface Broker {
  server: Server;
  /** Where it listens: the path, or "fd 3 (socket activation)". */
  where: string;
  close(): Promise<void>;
}

/** The listening fd systemd passed (LISTEN_FDS/LISTEN_PID), if any. */
export function activationFd(env: NodeJS.ProcessEnv): number | null {
  if (env.LISTEN_PID !== String(process.pid)) return null;
  const n = Number(env.LISTEN_FDS ?? 0);
  return n >= 1 ? 3 : null;
}

/** A stale socket of a dead broker is replaced; anything else at the path is left alone. */
async function clearSocketPath(path: string): Promise<void> {
  let st;
  try { st = lstatSync(path); } catch { return; }
  if (!st.isSocket()) throw new ConfigError(`${path} exists and is not a socket`, 'remove it or choose another --socket; the broker never deletes what is not its socket');
  const live = await new Promise<boolean>((resolve) => {
    const s = connect(path);
    s.once('connect', () => { s.destroy(); resolve(true); });
    s.once('error', () => resolve(false));
  });
  if (live) throw new ConfigError(`another broker is already listening on ${path}`, 'stop it first, or choose another --socket');
  unlinkSync(path);
}

function serveConnection(sock: Socket, cfg: BrokerOptions, watch: (id: string) => void): void {
  let buf = '';
  let served = false;
  cfg.metrics?.connection();
  const timer = setTimeout(() => sock.destroy(), REQUEST_TIMEOUT_MS);
  sock.setEncoding('utf8');
  sock.on('error', () => undefined);
  sock.on('close', () => clearTimeout(timer));
  sock.on('data', (d: string) => {
    if (served) return;
    buf += d;
    const nl = buf.indexOf('\n');
    if (nl < 0) {
      if (Buffer.byteLength(buf) > MAX_REQUEST_BYTES) {
        served = true;
        cfg.log('broker: request too long: connection closed');
        sock.destroy();
      }
      return;
    }
    served = true;
    clearTimeout(timer);
    let peer;
    try {
      peer = identify(sock);
    } catch (e) {
      cfg.log(`broker: cannot identify a client: ${describeError(e).line}`);
      sock.destroy();
      return;
    }
    const who = `uid=${peer.caller.uid} pid=${peer.caller.pid} comm=${peer.comm}`;
    try {
      let h;
      let op: string;
      try {
        const req = decodeRequest(buf.slice(0, nl));
        op = req.op;
        h = handle(req, peer.caller, peer.pidfd, cfg);
      } catch (e) {
        if (!(e instanceof BrokerProtocolError)) throw e;
        cfg.log(`broker: ${who}: bad request: ${e.message}`);
        cfg.metrics?.request('invalid', 2);
        sock.end(encodeReply({ v: 1, ok: false, exit: 2, error: `bad broker request: ${e.message}` }));
        return;
      }
      if (h.watch) watch(h.watch);
      cfg.metrics?.request(op, h.reply.exit);
      // Logged once the answer is in the kernel's hands: a decision in the log
      // has reached its client even if the broker dies the next moment.
      let logged = false;
      const logOnce = (suffix: string): void => {
        if (!logged) cfg.log(`broker: ${who}: ${h.what}: ${h.verdict}${suffix}`);
        logged = true;
      };
      sock.once('close', () => logOnce(' (the client went away before the answer)'));
      sock.end(encodeReply(h.reply), () => logOnce(''));
    } finally {
      closeFd(peer.pidfd);
    }
  });
}

/** Releases what died while no broker ran, then watches every endpoint still in use. */
function adoptRecords(cfg: BrokerOptions, watch: (id: string) => void): void {
  const r = gcAll(cfg.host);
  for (const e of r.endpoints.released) cfg.log(`broker: released endpoint ${e.id} (its owner is gone)${e.failed.length ? `; FAILED: ${e.failed.join('; ')}` : ''}`);
  for (const e of listEndpoints(cfg.host.stateDir)) {
    if ('record' in e && lifetimeOf(e.record) !== 'manual') watch(e.record.id);
  }
}

export async function startBroker(cfg: BrokerOptions): Promise<Broker> {
  checkStateDir(cfg.host.stateDir);
  const watched = new Set<string>();
  const watch = (id: string): void => {
    if (watched.has(id)) return;
    watched.add(id);
    watchEndpoint(id, cfg.host)
      .catch((e) => cfg.log(`broker: watching endpoint ${id} failed: ${describeError(e).line}`))
      .finally(() => watched.delete(id));
  };
  adoptRecords(cfg, watch);
  const server = createServer({ allowHalfOpen: false }, (sock) => serveConnection(sock, cfg, watch));
  const fd = activationFd(cfg.env ?? process.env);
  let where: string;
  if (fd !== null) {
    await new Promise<void>((resolve, reject) => { server.once('error', reject); server.listen({ fd }, resolve); });
    where = 'fd 3 (socket activation)';
  } else {
    mkdirSync(dirname(cfg.socket), { recursive: true, mode: 0o711 });
    await clearSocketPath(cfg.socket);
    await new Promise<void>((resolve, reject) => { server.once('error', reject); server.listen(cfg.socket, resolve); });
    chmodSync(cfg.socket, 0o666);
    where = cfg.socket;
  }
  return {
    server,
    where,
    close: () => new Promise<void>((resolve) => server.close(() => resolve())),
  };
}
