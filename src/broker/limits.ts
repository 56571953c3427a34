// The broker's bounds, so that one user can only slow itself: connections
// and running requests per uid and in all, endpoints per uid and in all, root
// keeping a reserve of each; requests over a user's running bound wait in that
// user's own queue, and freed slots go round-robin to the users waiting.
// Pure bookkeeping (no I/O), driven by the server; unit-tested.

export interface BrokerLimits {
  /** Open connections in all (non-root callers stop at maxConnections - rootReserveConnections). */
  maxConnections: number;
  maxConnectionsPerUser: number;
  /** Connections only root may use once the others have taken the rest. */
  rootReserveConnections: number;
  /** Requests running at once (each in its own child process); root's do not wait for this bound. */
  maxRunning: number;
  maxRunningPerUser: number;
  /** Durable endpoints (records) in all and per uid, requests that may make one included; root is not counted against them. */
  maxEndpoints: number;
  maxEndpointsPerUser: number;
  /** A request's whole life, waiting included: past it the caller is answered (exit 10) and its child killed. */
  requestTimeoutMs: number;
}

export const DEFAULT_LIMITS: BrokerLimits = {
  maxConnections: 1024,
  maxConnectionsPerUser: 64,
  rootReserveConnections: 32,
  maxRunning: 8,
  maxRunningPerUser: 2,
  maxEndpoints: 4096,
  maxEndpointsPerUser: 256,
  requestTimeoutMs: 60_000,
};

/** Checks a limits object: every bound a positive integer, reserve below the total. */
export function checkLimits(l: BrokerLimits): string | null {
  for (const [k, v] of Object.entries(l)) if (!Number.isSafeInteger(v) || v < (k === 'rootReserveConnections' ? 0 : 1)) return `${k} must be a positive integer (got ${v})`;
  if (l.rootReserveConnections >= l.maxConnections) return 'the root reserve of connections must be below the total';
  return null;
}

/** Keeps the connection bound well inside the fd limit: each connection costs an fd, each running request a few more. */
export function fitToFdLimit(l: BrokerLimits, fdLimit: number): BrokerLimits {
  const room = Math.max(64, fdLimit - 256 - 8 * l.maxRunning);
  if (l.maxConnections <= room) return l;
  const maxConnections = room;
  return { ...l, maxConnections, rootReserveConnections: Math.min(l.rootReserveConnections, Math.floor(maxConnections / 4)) };
}

/** Why a connection from uid may not be opened now, or null. */
export function connectionRefusal(l: BrokerLimits, uid: number, open: { total: number; ofUser: number }): string | null {
  if (uid === 0) return open.total >= l.maxConnections ? `the broker has ${l.maxConnections} connections open (--max-connections)` : null;
  if (open.ofUser >= l.maxConnectionsPerUser) return `uid ${uid} has ${l.maxConnectionsPerUser} connections open (--max-connections-per-user)`;
  if (open.total >= l.maxConnections - l.rootReserveConnections) return `the broker has ${open.total} connections open, the rest kept for root (--max-connections)`;
  return null;
}

/** Why a request that may make an endpoint is refused, or null. `existing` counts records, `pending` requests already running or waiting that may make one. */
export function endpointRefusal(l: BrokerLimits, uid: number, counts: { total: number; ofUser: number }): string | null {
  if (uid === 0) return null;
  if (counts.ofUser >= l.maxEndpointsPerUser) return `uid ${uid} has ${l.maxEndpointsPerUser} endpoints (--max-endpoints-per-user); release some with 'qemu-net-helper down'`;
  if (counts.total >= l.maxEndpoints) return `the broker serves ${l.maxEndpoints} endpoints (--max-endpoints)`;
  return null;
}

/**
 * Who runs next: per-uid FIFO queues under the per-user and the global
 * running bound; a freed slot goes to the waiting user with the fewest
 * requests running, so one user's backlog never delays another's first
 * request. Root's requests start at once.
 */
export class RunQueue<T> {
  private readonly waiting = new Map<number, T[]>();
  private readonly running = new Map<number, number>();
  private total = 0;
  /** uids with something waiting, in the order they get their next turn. */
  private turn: number[] = [];

  constructor(private readonly limits: Pick<BrokerLimits, 'maxRunning' | 'maxRunningPerUser'>) {}

  runningOf(uid: number): number { return this.running.get(uid) ?? 0; }
  get runningTotal(): number { return this.total; }
  waitingOf(uid: number): number { return this.waiting.get(uid)?.length ?? 0; }

  /** Adds an item; returns the items that may start now (in order). */
  push(uid: number, item: T): T[] {
    const q = this.waiting.get(uid);
    if (q) q.push(item);
    else {
      this.waiting.set(uid, [item]);
      this.turn.push(uid);
    }
    return this.next();
  }

  /** Removes an item still waiting (its caller went away or its time ran out); true if it was waiting. */
  drop(uid: number, item: T): boolean {
    const q = this.waiting.get(uid);
    const i = q ? q.indexOf(item) : -1;
    if (i < 0) return false;
    q!.splice(i, 1);
    if (q!.length === 0) {
      this.waiting.delete(uid);
      this.turn = this.turn.filter((u) => u !== uid);
    }
    return true;
  }

  /** An item of uid finished; returns the items that may start now. */
  finish(uid: number): T[] {
    const n = this.runningOf(uid) - 1;
    if (n > 0) this.running.set(uid, n);
    else this.running.delete(uid);
    this.total--;
    return this.next();
  }

  private canStart(uid: number): boolean {
    if (uid === 0) return true;
    return this.runningOf(uid) < this.limits.maxRunningPerUser && this.total < this.limits.maxRunning;
  }

  private next(): T[] {
    const started: T[] = [];
    for (let progress = true; progress;) {
      progress = false;
      // The waiting user with the fewest requests running goes first (ties: longest waiting in line).
      let uid: number | undefined;
      for (const u of this.turn) if (this.canStart(u) && (uid === undefined || this.runningOf(u) < this.runningOf(uid))) uid = u;
      if (uid !== undefined) {
        const q = this.waiting.get(uid)!;
        started.push(q.shift()!);
        this.running.set(uid, this.runningOf(uid) + 1);
        this.total++;
        // To the back of the line: the next free slot is someone else's turn.
        this.turn = this.turn.filter((u) => u !== uid);
        if (q.length) this.turn.push(uid);
        else this.waiting.delete(uid);
        progress = true;
      }
    }
    return started;
  }
}

/**
 * One log line per kind of refusal per window, whatever the flood: the first
 * is logged, the rest counted into the next line of that kind.
 */
export class RefusalLog {
  private readonly last = new Map<string, { at: number; suppressed: number }>();
  constructor(private readonly log: (line: string) => void, private readonly windowMs = 10_000, private readonly now: () => number = Date.now) {}

  note(key: string, line: string): void {
    const t = this.now();
    const s = this.last.get(key);
    if (s && t - s.at < this.windowMs) {
      s.suppressed++;
      return;
    }
    const more = s?.suppressed ? ` (and ${s.suppressed} more refusals like it since the last such line)` : '';
    this.last.set(key, { at: t, suppressed: 0 });
    if (this.last.size > 10_000) this.last.clear();
    this.log(line + more);
  }
}
