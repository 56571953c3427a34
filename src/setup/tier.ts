// The bottom of the setup tier: one setup under way, as every way in (helper,
// broker, `up`, `run`, the CNI plugin) makes it, in one order: the state
// directory is checked, endpoints of exited owners in the way are reaped, the
// record is drafted and every object that outlives this process is journaled
// into it as it is made; the setup is then either committed (the caller has
// handed the fds on) or undone in reverse, and its record goes with it unless
// something could not be undone, so that `gc` or DEL can retry from it.
import type { HostContext } from '../host/context.js';
import { draftRecord, journalingRollback } from '../lifecycle/record.js';
import { reapConflicting, type Wanted } from '../lifecycle/reap.js';
import { removeEndpoint, saveEndpoint, type EndpointRecord } from '../state/endpoints.js';
import type { OwnerRef } from '../state/owner.js';
import type { Rollback } from '../state/rollback.js';
import { checkStateDir } from '../state/state-dir.js';

export type SetupState = 'prepared' | 'committed' | 'undone';

export class PreparedSetup {
  readonly rb: Rollback;
  private state: SetupState = 'prepared';

  /** `saveNow`: the record is on disk before the first step (`up`, CNI: found by id even when nothing is owned yet). */
  constructor(readonly record: EndpointRecord, private readonly stateDir: string, saveNow = false) {
    if (saveNow) saveEndpoint(stateDir, record);
    this.rb = journalingRollback(record, stateDir);
  }

  get status(): SetupState { return this.state; }

  /** The setup is final: undo steps are forgotten; `keep` saves the record as it now is. */
  commit(keep: boolean): void {
    this.expectPrepared('commit');
    this.rb.commit();
    this.state = 'committed';
    if (keep) saveEndpoint(this.stateDir, this.record);
  }

  /** Undoes every step in reverse (every setup step's undo is synchronous); returns what could not be undone. */
  undo(): string[] {
    this.expectPrepared('undo');
    const left = this.rb.undoAllSync();
    this.state = 'undone';
    if (left.length === 0) removeEndpoint(this.stateDir, this.record.id);
    return left;
  }

  // A second commit or undo is a bug in the caller: after commit the objects
  // belong to someone else, after undo they are gone.
  private expectPrepared(what: string): void {
    if (this.state !== 'prepared') throw new Error(`setup ${this.record.id}: ${what} after it was ${this.state}`);
  }
}

/** What the tier needs of every way in, whatever its own request: the record's identity and what the setup would take. */
export interface SetupDraft {
  /** The record's mode (the parsed mode's name; CNI: its config's mode). */
  mode: string;
  id: string;
  /** The process whose exit ends the endpoint, when known. */
  owner: OwnerRef | null;
  /** Written to the record when the owner alone does not say it. */
  lifetime?: EndpointRecord['lifetime'];
  /** The admitted caller's uid. */
  uid?: number;
  /** The transport, when the way in knows it before realizing (CNI). */
  transport?: string;
  /** Facts of the way in, in the record from the start (CNI: its attachment, which DEL and GC look for). */
  info?: Record<string, unknown>;
  /** Device, MAC, VFs... the setup would take: an exited owner's endpoint holding one is released first. */
  wanted: Wanted;
  /** The record is on disk before the first step (`up`, CNI: found by its id even while it owns nothing). */
  saveNow: boolean;
}

/** The parts of a setup that differ between ways in, each called at its place in the one order. */
export interface SetupSteps<C, T> {
  /** Refusals that no released endpoint could lift (ACL; CNI: no namespace, an attachment made twice). */
  admit?: () => void;
  /** Refusals after the reap (a MAC still taken, an id in use): their findings are handed to realize. */
  vet: () => C;
  /** Makes the endpoint, registering an undo for each object on `s.rb` as soon as it exists. */
  realize: (s: PreparedSetup, vetted: C) => T;
  /** Told what could not be undone after realize failed (the record then stays). */
  undoLeft?: (left: string[]) => void;
}

/**
 * Prepares one setup: state directory checked, `admit`, endpoints of exited
 * owners in the way reaped, `vet`, the record drafted (saved at once when
 * asked) with the journal on it, `realize`. If realize throws, everything it
 * made is undone before the error goes on. The caller commits or undoes the rest.
 */
export function prepareSetup<C, T>(d: SetupDraft, host: HostContext, steps: SetupSteps<C, T>): { setup: PreparedSetup; value: T } {
  checkStateDir(host.stateDir);
  steps.admit?.();
  reapConflicting(d.wanted, host);
  const vetted = steps.vet();
  const setup = new PreparedSetup(recordOf(d), host.stateDir, d.saveNow);
  try {
    return { setup, value: steps.realize(setup, vetted) };
  } catch (e) {
    const left = setup.undo();
    if (left.length) steps.undoLeft?.(left);
    throw e;
  }
}

function recordOf(d: SetupDraft): EndpointRecord {
  const record = draftRecord(d.mode, d.owner, d.id);
  if (d.uid !== undefined) record.uid = d.uid;
  if (d.lifetime !== undefined) record.lifetime = d.lifetime;
  if (d.transport !== undefined) record.transport = d.transport;
  if (d.info) Object.assign(record.info, d.info);
  return record;
}
