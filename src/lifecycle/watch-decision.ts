// The watcher's decisions, apart from its I/O (pidfds, /proc scans, records):
// after each wake-up, stop, keep waiting, adopt a new owner or release.
// Pure, so each rule is unit-tested without processes.
import type { EndpointRecord } from '../state/endpoints.js';
import type { OwnerRef } from '../state/owner.js';

/** Whether an endpoint has anything to wait for: manual ones live until `down`. */
export function watchable(rec: Pick<EndpointRecord, 'owner' | 'lifetime'>): boolean {
  return rec.owner !== null || rec.lifetime === 'fd';
}

/** What the watcher saw on one wake-up; the lookups are called only when the rule needs them (they scan /proc). */
export interface WatchLook {
  /** The record was removed meanwhile (`down`, gc, or a request that reaped it). */
  recordGone: boolean;
  /** The owner's exit was seen on this wake-up. */
  exited: boolean;
  owner: OwnerRef | null;
  /** Whether the endpoint has an fd the watcher can follow (a tap name, a macvtap device number). */
  hasTarget: boolean;
  /** Wake-ups in a row on which nobody held the fd. */
  orphaned: number;
  ownerHolds(): boolean;
  /** Another live process holding the fd (not the owner, not the watcher), or null. */
  nextHolder(): OwnerRef | null;
}

export type WatchAction =
  | { kind: 'stop' }
  | { kind: 'release' }
  | { kind: 'wait'; orphaned: number }
  | { kind: 'adopt'; owner: OwnerRef };

export function watchStep(l: WatchLook): WatchAction {
  if (l.recordGone) return { kind: 'stop' };
  if (!l.hasTarget) return l.exited ? { kind: 'release' } : { kind: 'wait', orphaned: l.orphaned };
  if (!l.exited && l.owner && l.ownerHolds()) return { kind: 'wait', orphaned: 0 };
  // libvirt's peer handed the fd on (to the QEMU it started): follow it.
  const next = l.nextHolder();
  if (next) return { kind: 'adopt', owner: next };
  // Nobody holds it: the owner exited, or handed the fd to a process that is
  // already gone (or dropped it). Without a known owner's exit, it must be
  // seen twice in a row, so an fd still in flight in a socket (sent, not yet
  // received) is not taken for dead.
  const orphaned = l.orphaned + 1;
  if ((l.exited && l.owner) || orphaned >= 2) return { kind: 'release' };
  return { kind: 'wait', orphaned };
}
