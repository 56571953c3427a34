// Pure verdicts on endpoint records: is its owner gone, may gc release it,
// may a new request release it. The facts (process states, fd holders) come
// from the caller, so every rule here is checked by unit tests without /proc.
import { lifetimeOf, type EndpointRecord } from '../state/endpoints.js';
import type { OwnerRef } from '../state/owner.js';

export type OwnerStatus = 'alive' | 'gone' | 'unknown';

/** What a verdict may look up; `fdHeld` is called only when needed (it scans /proc). */
export interface LivenessFacts {
  ownerStatus(o: OwnerRef): OwnerStatus;
  fdHeld(): boolean;
}

function interruptedSetup(rec: EndpointRecord, facts: Pick<LivenessFacts, 'ownerStatus'>): boolean {
  const setupBy = rec.info.setupBy as OwnerRef | undefined;
  return rec.info.state === 'setting-up' && setupBy !== undefined && facts.ownerStatus(setupBy) === 'gone';
}

/** Why gc may release the endpoint (nobody can use it any more), or null while someone may. */
export function deadBecause(rec: EndpointRecord, facts: LivenessFacts): string | null {
  // A setup whose process died before it finished: nobody will ever use it.
  if (interruptedSetup(rec, facts)) return 'its setup was interrupted';
  const life = lifetimeOf(rec);
  if (life === 'owner' && rec.owner && facts.ownerStatus(rec.owner) === 'gone') return `owner pid ${rec.owner.pid} is gone`;
  if (life === 'fd' && !facts.fdHeld()) return 'nobody holds its fd';
  return null;
}

/**
 * Why a new request may release the endpoint standing in its way, or null.
 * Stricter than gc: only an owner known by (pid, start time) and seen gone,
 * whose fd nobody else holds (libvirt's peer may have handed it to a QEMU the
 * watcher has not adopted yet), or a setup whose process died. An 'fd'
 * endpoint (owner unknown) is never taken: its fd may be in flight in a
 * socket (sent, not yet received), so one look cannot tell it from a dead
 * one; the watcher, which looks twice, releases it. Manual endpoints wait
 * for `down`; unknown owners count as alive.
 */
export function reapableBecause(rec: EndpointRecord, facts: LivenessFacts): string | null {
  if (interruptedSetup(rec, facts)) return 'its setup was interrupted';
  if (lifetimeOf(rec) === 'owner' && rec.owner && facts.ownerStatus(rec.owner) === 'gone' && !facts.fdHeld()) return `owner pid ${rec.owner.pid} exited`;
  return null;
}
