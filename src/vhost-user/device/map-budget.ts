// How often a tenant may make the data path map guest memory. Every 2 GiB
// view costs the one worker all ports share a full garbage collection (V8
// counts the mapping as external memory): 5-20 ms, so a front-end remapping
// a 128 GiB table in a loop stalls everyone's traffic (measured: 11 frames in
// 5 s instead of 4000). A token bucket of
// views per owner: a table waits (only its own connection waits) until the
// owner's budget covers it, and is refused when that would take too long.
import { MemoryError } from './memory-table.js';

/** One largest table at once (a boot), then 64 views (128 GiB) a minute: ~1 GC a second, a few % of the worker's time. */
export const MAP_BUDGET = { capacity: 64, perSecond: 64 / 60, maxWaitMs: 30_000 } as const;

export class MapBudget {
  private tokens: number;
  private last: number;

  constructor(
    private readonly capacity: number = MAP_BUDGET.capacity,
    private readonly perSecond: number = MAP_BUDGET.perSecond,
    private readonly now: () => number = () => performance.now(),
  ) {
    this.tokens = capacity;
    this.last = now();
  }

  /**
   * Reserves `views` and returns how long (ms) to wait before mapping them;
   * reservations queue behind each other (the balance may go negative).
   * Throws MemoryError, reserving nothing, when the wait would pass maxWaitMs.
   */
  reserve(views: number, maxWaitMs: number = MAP_BUDGET.maxWaitMs): number {
    const t = this.now();
    this.tokens = Math.min(this.capacity, this.tokens + ((t - this.last) / 1000) * this.perSecond);
    this.last = t;
    const after = this.tokens - views;
    const waitMs = after >= 0 ? 0 : (-after / this.perSecond) * 1000;
    if (waitMs > maxWaitMs) throw new MemoryError(`remapping guest memory too often: this table (${views} views of 2 GiB) would have to wait ${Math.ceil(waitMs / 1000)} s for the owner's mapping budget`);
    this.tokens = after;
    return waitMs;
  }

  /** Waits until `views` may be mapped (the caller's connection alone waits). */
  async take(views: number): Promise<void> {
    const ms = this.reserve(views);
    if (ms > 0) await new Promise((r) => setTimeout(r, ms));
  }
}
