// How often a tenant may make the data path map guest memory. Every 2 GiB
// view costs the one worker all ports share a full garbage collection (V8
// counts the mapping as external memory): 5-20 ms, so a front-end remapping
// a 128 GiB table in a loop stalls everyone's traffic (measured: 11 frames in
// 5 s instead of 4000). A token bucket of
// views per owner: a table waits (only its own connection waits) until the
// owner's budget (and the one all tenants share) covers it, and is refused
// when that would take too long.
import { closeFd } from '../../sys/libc.js';
import { DeviceError } from './errors.js';
import { MemoryError } from './memory-table.js';

/** Per owner: one largest table at once (a boot), then 64 views (128 GiB) a minute: ~1 GC a second. */
export const MAP_BUDGET = { capacity: 64, perSecond: 64 / 60, maxWaitMs: 30_000 } as const;
/** All tenants together: twice that, so many tenants cannot add up to a stalled worker. */
export const SHARED_MAP_BUDGET = { capacity: 128, perSecond: 128 / 60 } as const;

export class MapBudget {
  private tokens: number;
  private last: number;

  /** `shared`: a budget every owner's also draws from (many tenants together bounded too). */
  constructor(
    private readonly capacity: number = MAP_BUDGET.capacity,
    private readonly perSecond: number = MAP_BUDGET.perSecond,
    private readonly now: () => number = () => performance.now(),
    private readonly shared?: MapBudget,
  ) {
    this.tokens = capacity;
    this.last = now();
  }

  /** Milliseconds until `views` are covered (refills first; reserves nothing). */
  private waitFor(views: number): number {
    const t = this.now();
    this.tokens = Math.min(this.capacity, this.tokens + ((t - this.last) / 1000) * this.perSecond);
    this.last = t;
    const after = this.tokens - views;
    return Math.max(after >= 0 ? 0 : (-after / this.perSecond) * 1000, this.shared?.waitFor(views) ?? 0);
  }

  private commit(views: number): void {
    this.tokens -= views;
    this.shared?.commit(views);
  }

  /**
   * Reserves `views` and returns how long (ms) to wait before mapping them;
   * reservations queue behind each other (the balance may go negative).
   * Throws MemoryError, reserving nothing, when the wait would pass maxWaitMs.
   */
  reserve(views: number, maxWaitMs: number = MAP_BUDGET.maxWaitMs): number {
    const waitMs = this.waitFor(views);
    if (waitMs > maxWaitMs) throw new MemoryError(`remapping guest memory too often: this table (${views} views of 2 GiB) would have to wait ${Math.ceil(waitMs / 1000)} s for the mapping budget`);
    this.commit(views);
    return waitMs;
  }

  /** Waits until `views` may be mapped (the caller's connection alone waits). */
  async take(views: number): Promise<void> {
    const ms = this.reserve(views);
    if (ms > 0) await new Promise((r) => setTimeout(r, ms));
  }
}

/**
 * Waits (the asking connection alone) until `budget` covers `views`; refuses
 * the table when that would take too long, or when the connection closed
 * meanwhile. `fds` are the request's own, closed when the table is not taken.
 */
export async function waitForBudget(budget: MapBudget | undefined, what: string, views: number, fds: number[], closed: () => boolean): Promise<void> {
  if (!budget) return;
  try {
    await budget.take(views);
  } catch (e) {
    fds.forEach(closeFd);
    throw new DeviceError(`${what}: ${(e as Error).message}`);
  }
  if (closed()) {
    fds.forEach(closeFd);
    throw new DeviceError(`${what}: the connection closed while the table waited for the mapping budget`, true);
  }
}
