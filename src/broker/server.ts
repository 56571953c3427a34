// The broker: a root daemon on a unix socket anyone may connect to (mode
// 0666: the broker decides, not the file mode). One request per connection.
// Its event loop never waits on a client: connections and requests are
// bounded per uid and in all (limits.ts), `list` is answered here from the
// root-owned records, everything else runs in a request process under a
// deadline (runner.ts), one user's requests queued apart from the others'.
// Setup code stays synchronous, in those processes. It owns what it makes:
// its watcher process (watchers.ts) watches each endpoint's owner with a pidfd
// and releases the endpoint when QEMU exits; restarted after a crash, it
// re-reads its records, releases what died meanwhile and watches the rest.
import { chmodSync, lstatSync, mkdirSync, readFileSync, unlinkSync } from 'node:fs';
import { connect, createServer, type Server, type Socket } from 'node:net';
import { dirname } from 'node:path';
import { ConfigError, describeError, ExitCode } from '../errors.js';
import { closeFd } from '../sys/libc.js';
import { pidfdOpen } from '../sys/pidfd.js';
import { peerCred } from '../sys/unix-fd.js';
import { listFor } from '../lifecycle/list.js';
import { gcAll } from '../lifecycle/gc.js';
import { reapableNow } from '../lifecycle/reap.js';
import { listEndpoints } from '../state/endpoints.js';
import { checkStateDir } from '../state/state-dir.js';
import type { BrokerConfig, Handled } from './handle.js';
import type { BrokerMetrics } from './metrics.js';
import { connectionRefusal, DEFAULT_LIMITS, endpointRefusal, fitToFdLimit, RefusalLog, RunQueue, type BrokerLimits } from './limits.js';
import { identify, socketFd, type Peer } from './peer.js';
import { BrokerProtocolError, encodeReply, MAX_REQUEST_BYTES, type BrokerReply, type BrokerRequest } from './protocol.js';
import { decodeRequest } from './request.js';
import { Runner } from './runner.js';
import { Watchers } from './watchers.js';

/** A client that has not sent its request by then is dropped. */
const REQUEST_TIMEOUT_MS = 10_000;

export interface BrokerOptions extends BrokerConfig {
  /** Socket path (ignored under socket activation). */
  socket: string;
  log: (line: string) => void;
  env?: NodeJS.ProcessEnv;
  /** Bounds (default DEFAULT_LIMITS); the connection bound is lowered to fit the fd limit. */
  limits?: BrokerLimits;
  /** Request processes kept started ahead (default 4: what the attacker's --max-running-per-user can hold, and more). */
  spares?: number;
  /** Counted when given (`daemon --metrics`). */
  metrics?: BrokerMetrics;
}

export interface Broker {
  server: Server;
  /** Where it listens: the path, or "fd 3 (socket activation)". */
  where: string;
  /** The bounds in force (after fitting to the fd limit). */
  limits: BrokerLimits;
  close(): Promise<void>;
}

/** The listening fd systemd passed (LISTEN_FDS/LISTEN_PID), if any. */
function activationFd(env: NodeJS.ProcessEnv): number | null {
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

/** The soft RLIMIT_NOFILE of this process (Node raises it to the hard limit at start). */
function fdSoftLimit(): number {
  try {
    const m = /^Max open files\s+(\d+|unlimited)/m.exec(readFileSync('/proc/self/limits', 'utf8'));
    if (m && m[1] !== 'unlimited') return Number(m[1]);
  } catch { /* no /proc: assume plenty */ }
  return 1 << 20;
}

/** Requests checked against the endpoint bounds: both may leave a durable endpoint behind. */
function mayMakeEndpoint(req: BrokerRequest): boolean {
  return req.op === 'up' || req.op === 'helper';
}

/**
 * Requests counted as endpoints while they wait or run: `up` always makes one;
 * a helper request mostly makes none (a plain tap lives as long as QEMU's fd),
 * so it is checked against the records alone, and a user's concurrent helper
 * requests can pass the bound by at most --max-running-per-user.
 */
function reservesEndpoint(req: BrokerRequest): boolean {
  return req.op === 'up';
}

interface Pending {
  peer: Peer;
  req: BrokerRequest;
  who: string;
  what: string;
  /** Answers the client (once) and logs the decision. */
  answer: (reply: BrokerReply, verdict: string, what?: string) => void;
  /** Set once the request runs: kills its child. */
  kill?: () => void;
  deadline?: NodeJS.Timeout;
  done: boolean;
}

class BrokerCore {
  private readonly conns = new Map<number, number>();
  private connTotal = 0;
  private readonly queue: RunQueue<Pending>;
  /** Requests waiting or running that may make an endpoint, per uid. */
  private readonly pendingEndpoints = new Map<number, number>();
  private readonly refusals: RefusalLog;
  readonly sockets = new Set<Socket>();
  private reaping = false;
  private reapAgain = false;

  constructor(private readonly cfg: BrokerOptions, readonly limits: BrokerLimits, private readonly runner: Runner, private readonly watch: (id: string) => void) {
    this.queue = new RunQueue(limits);
    this.refusals = new RefusalLog(cfg.log);
  }

  accept(sock: Socket): void {
    this.cfg.metrics?.connection();
    let uid: number;
    try {
      uid = peerCred(socketFd(sock)).uid;
    } catch {
      sock.destroy();
      return;
    }
    const why = connectionRefusal(this.limits, uid, { total: this.connTotal, ofUser: this.conns.get(uid) ?? 0 });
    sock.on('error', () => undefined);
    if (why) {
      this.refusals.note(`conn:${uid}`, `broker: uid=${uid}: connection refused: ${why}`);
      // One short line into an empty socket buffer: written at once, then the socket goes whether or not the client reads.
      this.reply(sock, { v: 1, ok: false, exit: ExitCode.EXHAUSTED, error: `the broker refused the connection: ${why}` });
      return;
    }
    this.connTotal++;
    this.conns.set(uid, (this.conns.get(uid) ?? 0) + 1);
    this.sockets.add(sock);
    sock.once('close', () => {
      this.connTotal--;
      const n = (this.conns.get(uid) ?? 1) - 1;
      if (n > 0) this.conns.set(uid, n);
      else this.conns.delete(uid);
      this.sockets.delete(sock);
    });
    this.read(sock);
  }

  private read(sock: Socket): void {
    let buf = '';
    let served = false;
    const timer = setTimeout(() => sock.destroy(), REQUEST_TIMEOUT_MS);
    sock.setEncoding('utf8');
    sock.on('close', () => clearTimeout(timer));
    sock.on('data', (d: string) => {
      if (served) return;
      buf += d;
      const nl = buf.indexOf('\n');
      if (nl < 0) {
        if (Buffer.byteLength(buf) > MAX_REQUEST_BYTES) {
          served = true;
          this.cfg.log('broker: request too long: connection closed');
          sock.destroy();
        }
        return;
      }
      served = true;
      clearTimeout(timer);
      this.request(sock, buf.slice(0, nl));
    });
  }

  private request(sock: Socket, line: string): void {
    let peer: Peer;
    try {
      peer = identify(sock);
    } catch (e) {
      this.cfg.log(`broker: cannot identify a client: ${describeError(e).line}`);
      sock.destroy();
      return;
    }
    const who = `uid=${peer.caller.uid} pid=${peer.caller.pid} comm=${peer.comm}`;
    let req: BrokerRequest;
    try {
      req = decodeRequest(line);
    } catch (e) {
      closeFd(peer.pidfd);
      if (!(e instanceof BrokerProtocolError)) throw e;
      this.cfg.log(`broker: ${who}: bad request: ${e.message}`);
      this.cfg.metrics?.request('invalid', 2);
      this.reply(sock, { v: 1, ok: false, exit: 2, error: `bad broker request: ${e.message}` });
      return;
    }
    const what = req.op === 'helper' ? `helper ${req.argv.join(' ')}` : req.op === 'up' ? `up ${JSON.stringify(req.options)}` : req.op === 'down' ? `down ${req.id}` : req.op;
    let answered = false;
    const p: Pending = {
      peer, req, who, what, done: false,
      answer: (reply, verdict, w = what) => {
        if (answered) return;
        answered = true;
        this.cfg.metrics?.request(req.op, reply.exit);
        // Logged once the answer is in the kernel's hands: a decision in the log
        // has reached its client even if the broker dies the next moment.
        let logged = false;
        const logOnce = (suffix: string): void => {
          if (!logged) this.cfg.log(`broker: ${who}: ${w}: ${verdict}${suffix}`);
          logged = true;
        };
        sock.once('close', () => logOnce(' (the client went away before the answer)'));
        this.reply(sock, reply, () => logOnce(''));
      },
    };
    if (req.op === 'list') {
      // Read here, not in a child: root's own records, no caller-chosen file, nothing that can wait on anyone.
      try {
        const result = listFor(this.cfg.host.stateDir, peer.caller);
        p.answer({ v: 1, ok: true, exit: 0, result }, `${result.endpoints.length} endpoints`);
      } catch (e) {
        const { exitCode, line: l } = describeError(e);
        p.answer({ v: 1, ok: false, exit: exitCode, error: l }, `refused (exit ${exitCode}): ${l}`);
      } finally {
        closeFd(peer.pidfd);
      }
      return;
    }
    this.enqueue(sock, p);
  }

  private enqueue(sock: Socket, p: Pending): void {
    const uid = p.peer.caller.uid;
    if (mayMakeEndpoint(p.req)) {
      let ofUser = this.pendingEndpoints.get(uid) ?? 0;
      let total = [...this.pendingEndpoints.values()].reduce((a, b) => a + b, 0);
      const records = listEndpoints(this.cfg.host.stateDir);
      for (const e of records) {
        total++;
        if ('record' in e && (e.record.uid ?? 0) === uid) ofUser++;
      }
      let why = endpointRefusal(this.limits, uid, { total, ofUser });
      if (why) {
        // At a bound, endpoints whose owner exited hold no place: their watcher (or
        // the request's own reap) releases them in a moment. Looked up only here.
        const dead = records.flatMap((e) => ('record' in e && reapableNow(e.record) !== null ? [e.record] : []));
        why = endpointRefusal(this.limits, uid, { total: total - dead.length, ofUser: ofUser - dead.filter((r) => (r.uid ?? 0) === uid).length });
      }
      if (why) {
        closeFd(p.peer.pidfd);
        this.refusals.note(`endpoints:${uid}`, `broker: uid=${uid}: request refused: ${why}`);
        p.answer({ v: 1, ok: false, exit: ExitCode.EXHAUSTED, error: `no more endpoints: ${why}` }, `refused (exit ${ExitCode.EXHAUSTED}): ${why}`);
        return;
      }
      if (reservesEndpoint(p.req)) this.pendingEndpoints.set(uid, (this.pendingEndpoints.get(uid) ?? 0) + 1);
    }
    const seconds = this.limits.requestTimeoutMs / 1000;
    p.deadline = setTimeout(() => {
      if (this.queue.drop(uid, p)) {
        this.finished(p);
        p.answer({ v: 1, ok: false, exit: ExitCode.SETUP_FAILED, error: `the broker did not get to this request within ${seconds} s (uid ${uid}'s earlier requests are still running)` }, `timed out waiting (${seconds} s)`);
      } else {
        p.kill?.();
        p.answer({ v: 1, ok: false, exit: ExitCode.SETUP_FAILED, error: `the request did not finish within ${seconds} s; the broker stopped it` }, `timed out after ${seconds} s: stopped`);
      }
    }, this.limits.requestTimeoutMs);
    p.deadline.unref();
    sock.once('close', () => {
      // Gone before its turn: nothing was done for it.
      if (this.queue.drop(uid, p)) {
        clearTimeout(p.deadline);
        this.finished(p);
        this.cfg.log(`broker: ${p.who}: ${p.what}: dropped (the client went away while waiting)`);
      }
    });
    for (const q of this.queue.push(uid, p)) this.start(q);
  }

  /** The pidfd and the endpoint reservation of a request that will not run (or has run). */
  private finished(p: Pending): void {
    if (p.done) return;
    p.done = true;
    closeFd(p.peer.pidfd);
    const uid = p.peer.caller.uid;
    if (reservesEndpoint(p.req)) {
      const n = (this.pendingEndpoints.get(uid) ?? 1) - 1;
      if (n > 0) this.pendingEndpoints.set(uid, n);
      else this.pendingEndpoints.delete(uid);
    }
  }

  private start(p: Pending): void {
    const c = p.peer.caller;
    const cfg: BrokerConfig = { host: this.cfg.host, acl: this.cfg.acl, config: this.cfg.config, brokerPid: process.pid };
    const run = this.runner.run({ req: p.req, caller: { uid: c.uid, gid: c.gid, groups: [...c.groups], pid: c.pid }, cfg }, p.peer.pidfd);
    p.kill = run.kill;
    run.result.then((h: Handled) => {
      if (h.watch) this.watch(h.watch);
      p.answer(h.reply, h.verdict, h.what);
    }, (e: Error) => {
      p.answer({ v: 1, ok: false, exit: ExitCode.SETUP_FAILED, error: `${e.message}; what it had made is released` }, `failed: ${e.message}`);
      this.reap();
    }).finally(() => clearTimeout(p.deadline));
    // The slot is free when the child is gone, not when its time ran out: a child stuck in the kernel still counts against its user.
    void run.freed.then(() => {
      this.finished(p);
      for (const q of this.queue.finish(c.uid)) this.start(q);
    });
  }

  /**
   * A request process died mid-request (killed at its deadline, or crashed):
   * what it had made is journaled with it as the one setting up, so a gc as
   * root, in a request process of its own, releases it now.
   */
  private reap(): void {
    if (this.reaping) {
      this.reapAgain = true;
      return;
    }
    this.reaping = true;
    const pidfd = pidfdOpen(process.pid);
    const cfg: BrokerConfig = { host: this.cfg.host, acl: this.cfg.acl, config: this.cfg.config, brokerPid: process.pid };
    const run = this.runner.run({ req: { v: 1, op: 'gc' }, caller: { uid: 0, gid: 0, groups: [], pid: process.pid }, cfg }, pidfd);
    run.result.then((h) => this.cfg.log(`broker: after a failed request: gc: ${h.verdict}`), (e: Error) => this.cfg.log(`broker: after a failed request: gc failed: ${e.message}`));
    void run.freed.then(() => {
      closeFd(pidfd);
      this.reaping = false;
      if (this.reapAgain) {
        this.reapAgain = false;
        this.reap();
      }
    });
  }

  /** Writes the reply and closes: the socket goes once written, whether or not the client reads or closes. */
  private reply(sock: Socket, reply: BrokerReply, written?: () => void): void {
    sock.end(encodeReply(reply), () => {
      written?.();
      sock.destroy();
    });
  }
}
/** Releases what died while no broker ran (before listening: nobody waits yet); then everything still in use is watched. */
function releaseTheDead(cfg: BrokerOptions): void {
  const r = gcAll(cfg.host);
  for (const e of r.endpoints.released) cfg.log(`broker: released endpoint ${e.id} (its owner is gone)${e.failed.length ? `; FAILED: ${e.failed.join('; ')}` : ''}`);
}

export async function startBroker(cfg: BrokerOptions): Promise<Broker> {
  checkStateDir(cfg.host.stateDir);
  const limits = fitToFdLimit(cfg.limits ?? DEFAULT_LIMITS, fdSoftLimit());
  releaseTheDead(cfg);
  const watchers = new Watchers(cfg.host, cfg.log);
  watchers.adoptAll();
  const watch = (id: string): void => watchers.watch(id);
  const runner = new Runner(cfg.spares ?? 4, cfg.log);
  const core = new BrokerCore(cfg, limits, runner, watch);
  const server = createServer({ allowHalfOpen: false }, (sock) => core.accept(sock));
  const fd = activationFd(cfg.env ?? process.env);
  let where: string;
  try {
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
  } catch (e) {
    runner.close();
    watchers.close();
    throw e;
  }
  return {
    server,
    where,
    limits,
    close: () => new Promise<void>((resolve) => {
      runner.close();
      watchers.close();
      server.close(() => resolve());
      for (const s of core.sockets) s.destroy();
    }),
  };
}
