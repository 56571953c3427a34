// System-wide claims on SR-IOV VFs, one per VF PCI address, shared by every
// helper process on the host (and by `list`/`gc`).
//
// Two files per VF under <stateDir>/vf/:
//   <pci>.lock  empty, created once and NEVER replaced or deleted. It only
//               carries the flock. (Deleting or renaming over a lock file
//               breaks flock: a process still holding the old inode and one
//               that opened the new name would both "hold the lock".)
//   <pci>.json  the claim record, replaced atomically (temp + fsync + rename).
//
// The flock is held only while deciding (a few ms): the helper that claims
// exits right after handing QEMU its fd, so the lock cannot be the claim.
// The durable claim is the record, naming its owner by (pid, start time);
// a record whose owner is gone is stale and may be taken over, under the flock.
// Two claimants can therefore never both see "free": each decides only while
// holding the flock, and the winner's record is on disk before it lets go.
// (sriov-cni uses the same flock-per-PCI-address idea; it keys staleness on
// the pod's netns path instead of a process.)
import { closeSync, constants as fsc, openSync, readdirSync } from 'node:fs';
import { join } from 'node:path';
import { ConfigError, ExhaustedError, PermissionError, SetupError } from '../errors.js';
import { flockExclusive } from '../sys/flock.js';
import { ensureDir, readFileOrNull, removeFileDurable, writeFileAtomic } from './atomic-file.js';
import { isOwnerRef, ownerStatus, sameOwner, type OwnerRef } from './owner.js';


export const CLAIM_VERSION = 1;
/** How long a claimant waits for a VF whose lock someone else holds right now. */
const DEFAULT_LOCK_WAIT_MS = 3000;

export interface ClaimRecord {
  version: typeof CLAIM_VERSION;
  pci: string;
  /** The process whose life the claim follows (QEMU, in the helper path). */
  owner: OwnerRef;
  endpointId: string;
  /** ISO 8601 time of the claim. */
  claimedAt: string;
  /** The process that wrote the claim (the helper), for diagnostics. */
  claimedBy: number;
  /** Backend data kept with the claim (saved VF settings), for release/gc by another process. */
  data?: Record<string, unknown>;
}

export interface Claimant {
  owner: OwnerRef;
  endpointId: string;
  data?: Record<string, unknown>;
}

export type ClaimOutcome =
  /** `previous`: the stale record this claim replaced; `again`: the claimant already held it. */
  | { ok: true; record: ClaimRecord; previous?: ClaimRecord; again: boolean }
  | { ok: false; reason: 'held'; holder: ClaimRecord }
  | { ok: false; reason: 'busy' }
  | { ok: false; reason: 'foreign' | 'stale-cleanup-failed'; detail: string };

export type ClaimState = 'held' | 'stale' | 'unknown-owner' | 'corrupt' | 'foreign';
export interface ClaimEntry {
  pci: string;
  state: ClaimState;
  record?: ClaimRecord;
  detail?: string;
}

export interface ClaimOptions {
  /** Wait this long for a busy lock (0: skip at once). */
  waitMs?: number;
  /**
   * Called under the flock with a stale record before it is replaced, so the
   * dead owner's changes (VF settings) can be undone first. Throwing keeps the
   * stale record and skips this VF.
   */
  onStale?: (stale: ClaimRecord) => void;
}

const PCI_RE = /^[0-9a-f]{4}:[0-9a-f]{2}:[0-9a-f]{2}\.[0-7]$/;

/** A full PCI address (domain:bus:device.function, lower-case hex). */
export function isPciAddress(s: string): boolean { return PCI_RE.test(s); }

function checkPci(pci: string): string {
  // The address becomes a file name: anything else could escape the directory.
  if (!isPciAddress(pci)) throw new ConfigError(`'${pci}' is not a PCI address`, 'write it as dddd:bb:dd.f, e.g. 0000:03:10.0');
  return pci;
}

function claimDir(stateDir: string): string { return join(stateDir, 'vf'); }
const lockPath = (stateDir: string, pci: string): string => join(claimDir(stateDir), `${pci}.lock`);
const recordPath = (stateDir: string, pci: string): string => join(claimDir(stateDir), `${pci}.json`);

const BUSY = Symbol('busy');

/** Runs fn holding the VF's flock; BUSY when it could not be taken within waitMs. */
function withVfLock<T>(stateDir: string, pci: string, waitMs: number, fn: () => T): T | typeof BUSY {
  let fd: number;
  try {
    ensureDir(claimDir(stateDir));
    // Node opens with O_CLOEXEC, so QEMU or any child never inherits the lock.
    fd = openSync(lockPath(stateDir, pci), fsc.O_RDWR | fsc.O_CREAT | fsc.O_NOFOLLOW, 0o600);
  } catch (e) {
    const code = (e as NodeJS.ErrnoException).code;
    if (code === 'EACCES' || code === 'EPERM' || code === 'EROFS') {
      throw new PermissionError(`cannot create VF claim files under ${claimDir(stateDir)}: ${code}`, 'run as root or point QEMU_NET_HELPER_STATE_DIR at a writable directory');
    }
    throw e;
  }
  try {
    if (!flockExclusive(fd, waitMs)) return BUSY;
    return fn();
  } finally {
    closeSync(fd); // drops the flock
  }
}

type ParsedRecord = { kind: 'none' } | { kind: 'ok'; record: ClaimRecord } | { kind: 'corrupt' | 'foreign'; detail: string };

function parseRecord(pci: string, text: string | null): ParsedRecord {
  if (text === null) return { kind: 'none' };
  let v: unknown;
  try { v = JSON.parse(text); } catch { return { kind: 'corrupt', detail: 'not JSON' }; }
  const r = v as Partial<ClaimRecord> | null;
  if (typeof r !== 'object' || r === null) return { kind: 'corrupt', detail: 'not an object' };
  // A newer format belongs to a newer helper: never judge (or steal) it.
  if (typeof r.version === 'number' && r.version > CLAIM_VERSION) return { kind: 'foreign', detail: `record version ${r.version}` };
  if (r.version !== CLAIM_VERSION || r.pci !== pci || !isOwnerRef(r.owner) || typeof r.endpointId !== 'string') {
    return { kind: 'corrupt', detail: 'missing or wrong fields' };
  }
  return { kind: 'ok', record: r as ClaimRecord };
}

/** The claim record of one VF (read without the lock: records are replaced atomically). */
export function readClaim(stateDir: string, pci: string): ClaimEntry | null {
  checkPci(pci);
  const p = parseRecord(pci, readFileOrNull(recordPath(stateDir, pci)));
  if (p.kind === 'none') return null;
  if (p.kind !== 'ok') return { pci, state: p.kind, detail: p.detail };
  const st = ownerStatus(p.record.owner);
  return { pci, record: p.record, state: st === 'alive' ? 'held' : st === 'gone' ? 'stale' : 'unknown-owner' };
}

/** Every VF with a record: held, stale (owner gone), unknown-owner, corrupt or foreign. */
export function listClaims(stateDir: string): ClaimEntry[] {
  let names: string[];
  try {
    names = readdirSync(claimDir(stateDir));
  } catch (e) {
    if ((e as NodeJS.ErrnoException).code === 'ENOENT') return [];
    throw e;
  }
  const out: ClaimEntry[] = [];
  for (const n of names.sort()) {
    const pci = n.endsWith('.json') ? n.slice(0, -5) : '';
    if (!isPciAddress(pci)) continue;
    const e = readClaim(stateDir, pci);
    if (e) out.push(e);
  }
  return out;
}

function newRecord(pci: string, who: Claimant): ClaimRecord {
  const r: ClaimRecord = {
    version: CLAIM_VERSION, pci, owner: { pid: who.owner.pid, startTime: who.owner.startTime },
    endpointId: who.endpointId, claimedAt: new Date().toISOString(), claimedBy: process.pid,
  };
  if (who.data) r.data = who.data;
  return r;
}

/** Tries to claim one VF. Never claims a VF whose record names a live (or invisible) owner. */
export function tryClaimVf(stateDir: string, pci: string, who: Claimant, opts: ClaimOptions = {}): ClaimOutcome {
  checkPci(pci);
  const res = withVfLock(stateDir, pci, opts.waitMs ?? 0, (): ClaimOutcome => {
    const p = parseRecord(pci, readFileOrNull(recordPath(stateDir, pci)));
    if (p.kind === 'foreign') return { ok: false, reason: 'foreign', detail: p.detail };
    let previous: ClaimRecord | undefined;
    if (p.kind === 'ok') {
      const held = p.record;
      if (sameOwner(held.owner, who.owner) && held.endpointId === who.endpointId) {
        return { ok: true, record: held, again: true };
      }
      if (ownerStatus(held.owner) !== 'gone') return { ok: false, reason: 'held', holder: held };
      if (opts.onStale) {
        try {
          opts.onStale(held);
        } catch (e) {
          return { ok: false, reason: 'stale-cleanup-failed', detail: e instanceof Error ? e.message : String(e) };
        }
      }
      previous = held;
    }
    // 'none' or 'corrupt': our own writers never leave a torn record (atomic
    // replace), so an unreadable one names no owner we could protect.
    const record = newRecord(pci, who);
    writeFileAtomic(recordPath(stateDir, pci), `${JSON.stringify(record)}\n`);
    return previous ? { ok: true, record, previous, again: false } : { ok: true, record, again: false };
  });
  return res === BUSY ? { ok: false, reason: 'busy' } : res;
}

/**
 * Claims the first VF of `pcis` (in order) that is free or stale. A first
 * pass skips VFs whose lock is busy; a second pass waits for those, so a VF
 * that another process was merely inspecting (list, gc, a loser) is not
 * missed. Throws ExhaustedError when none could be claimed.
 */
export function claimFirstFree(stateDir: string, pcis: readonly string[], who: Claimant, opts: ClaimOptions = {}): { record: ClaimRecord; previous?: ClaimRecord; again: boolean } {
  const refused: string[] = [];
  let busy: string[] = [];
  for (const pass of [0, 1]) {
    const list = pass === 0 ? pcis : busy;
    busy = [];
    for (const pci of list) {
      const r = tryClaimVf(stateDir, pci, who, { ...opts, waitMs: pass === 0 ? 0 : (opts.waitMs ?? DEFAULT_LOCK_WAIT_MS) });
      if (r.ok) return r.previous ? { record: r.record, previous: r.previous, again: r.again } : { record: r.record, again: r.again };
      if (r.reason === 'busy') busy.push(pci);
      else if (r.reason === 'held') refused.push(`${pci} (pid ${r.holder.owner.pid}, ${r.holder.endpointId})`);
      else refused.push(`${pci} (${r.reason}: ${r.detail})`);
    }
    if (!busy.length) break;
  }
  for (const pci of busy) refused.push(`${pci} (lock busy)`);
  const shown = refused.slice(0, 4).join(', ') + (refused.length > 4 ? `, and ${refused.length - 4} more` : '');
  throw new ExhaustedError(
    pcis.length ? `no free VF: all ${pcis.length} candidate VFs are claimed: ${shown}` : 'no free VF: the pool has no usable VFs',
    "see 'qemu-net-helper list'; stop a guest, run 'qemu-net-helper gc', or enable more VFs (sriov_numvfs)",
  );
}

/** Replaces the backend data of a claim the claimant holds; throws if it no longer holds it. */
export function updateClaimData(stateDir: string, pci: string, who: Claimant, data: Record<string, unknown>): ClaimRecord {
  checkPci(pci);
  const res = withVfLock(stateDir, pci, DEFAULT_LOCK_WAIT_MS, () => {
    const p = parseRecord(pci, readFileOrNull(recordPath(stateDir, pci)));
    if (p.kind !== 'ok' || !sameOwner(p.record.owner, who.owner) || p.record.endpointId !== who.endpointId) {
      throw new SetupError(`the claim on VF ${pci} is no longer held by ${who.endpointId}`, 'another process took it over; please report this');
    }
    const record: ClaimRecord = { ...p.record, data };
    writeFileAtomic(recordPath(stateDir, pci), `${JSON.stringify(record)}\n`);
    return record;
  });
  if (res === BUSY) throw new SetupError(`VF ${pci}: claim lock busy for ${DEFAULT_LOCK_WAIT_MS} ms`);
  return res;
}

export interface ReleaseMatch {
  owner?: OwnerRef;
  endpointId?: string;
  /** Only release when the owner is gone (gc). */
  onlyStale?: boolean;
}

export type ReleaseResult = 'released' | 'absent' | 'not-owner' | 'busy';

/**
 * Drops a claim under the flock; idempotent ('absent' when there is none).
 * With `match`, a claim that has since passed to someone else is left alone
 * ('not-owner'): releasing it would undo the new owner's settings.
 * `beforeRemove` runs under the flock first (restore VF settings); if it
 * throws, the record stays, so gc can retry.
 */
export function releaseVf(stateDir: string, pci: string, match: ReleaseMatch = {}, beforeRemove?: (rec: ClaimRecord) => void, waitMs = DEFAULT_LOCK_WAIT_MS): ReleaseResult {
  checkPci(pci);
  const res = withVfLock(stateDir, pci, waitMs, (): ReleaseResult => {
    const p = parseRecord(pci, readFileOrNull(recordPath(stateDir, pci)));
    if (p.kind === 'none') return 'absent';
    if (p.kind === 'foreign') return 'not-owner';
    if (p.kind === 'ok') {
      const r = p.record;
      if (match.owner && !sameOwner(r.owner, match.owner)) return 'not-owner';
      if (match.endpointId !== undefined && r.endpointId !== match.endpointId) return 'not-owner';
      if (match.onlyStale && ownerStatus(r.owner) !== 'gone') return 'not-owner';
      beforeRemove?.(r);
    }
    removeFileDurable(recordPath(stateDir, pci));
    return 'released';
  });
  return res === BUSY ? 'busy' : res;
}
