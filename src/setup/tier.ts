// The bottom of the setup tier: one setup under way, as every way in (helper,
// broker, `up`, `run`, the CNI plugin) makes it. Its record is drafted first
// and every object that outlives this process is journaled into it as it is
// made; the setup is then either committed (the caller has handed the fds on)
// or undone in reverse, and its record goes with it unless something could not
// be undone, so that `gc` or DEL can retry from it.
import { journalingRollback } from '../lifecycle/record.js';
import { removeEndpoint, saveEndpoint, type EndpointRecord } from '../state/endpoints.js';
import type { Rollback } from '../state/rollback.js';

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

  /** Undoes every step in reverse (synchronous steps only); returns what could not be undone. */
  undo(): string[] {
    this.expectPrepared('undo');
    return this.finishUndo(this.rb.undoAllSync());
  }

  /** As undo, awaiting steps whose undo is asynchronous (the CNI plugin's). */
  async undoAsync(): Promise<string[]> {
    this.expectPrepared('undo');
    return this.finishUndo(await this.rb.undoAll());
  }

  private finishUndo(left: string[]): string[] {
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

/**
 * Runs `steps` on a new prepared setup; if they throw, everything they made
 * is undone before the error goes on. The caller commits or undoes the rest.
 */
export function prepareSetup<T>(record: EndpointRecord, stateDir: string, saveNow: boolean, steps: (s: PreparedSetup) => T): { setup: PreparedSetup; value: T } {
  const setup = new PreparedSetup(record, stateDir, saveNow);
  try {
    return { setup, value: steps(setup) };
  } catch (e) {
    setup.undo();
    throw e;
  }
}
