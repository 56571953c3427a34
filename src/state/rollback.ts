// Every setup step registers its undo here as soon as the thing it made
// exists; a failure anywhere later undoes everything in reverse order, so a
// refused or crashed setup leaves nothing behind. Steps that make something
// outliving this process also name it (`owned`): a journal hook persists it at
// once, so if the process is killed mid-setup, `gc` still finds and removes it.
import type { OwnedBy } from './owned.js';
import { callerIsRoot, ENV } from '../host/context.js';

export interface UndoStep {
  what: string;
  undo: () => void | Promise<void>;
}

/** A step's durable object and the kernel implementation that can release it. */
export type OwnedStep = OwnedBy;

export type Journal = (owned: OwnedStep) => void;

export class Rollback {
  private steps: UndoStep[] = [];
  private journal: Journal | undefined;
  // Shared with child rollbacks: fault injection counts every step of one setup.
  private counter = { n: 0 };

  constructor(journal?: Journal) {
    this.journal = journal;
  }

  /**
   * Registers an undo. `owned` names a durable object the undo removes; it is
   * journaled before this returns.
   */
  add(what: string, undo: () => void | Promise<void>, owned?: OwnedStep): void {
    this.steps.push({ what, undo });
    if (owned && this.journal) this.journal(owned);
    faultInjection(++this.counter.n);
  }

  get size(): number { return this.steps.length; }

  /** Takes over another rollback's steps (a sub-setup that succeeded), after ours. */
  adopt(other: Rollback): void {
    this.steps.push(...other.steps);
    other.steps = [];
  }

  /** A sub-rollback whose owned objects go to the same journal. */
  child(): Rollback {
    const r = new Rollback(this.journal);
    r.counter = this.counter;
    return r;
  }

  /** Forget the undo steps: the setup succeeded and its objects now belong to someone else. */
  commit(): void { this.steps = []; }

  /** Undoes in reverse; keeps going past failures and returns what could not be undone. */
  async undoAll(): Promise<string[]> {
    const failed: string[] = [];
    while (this.steps.length) {
      const s = this.steps.pop()!;
      try {
        await s.undo();
      } catch (e) {
        failed.push(`${s.what}: ${e instanceof Error ? e.message : String(e)}`);
      }
    }
    return failed;
  }

  /** Synchronous variant for the helper, where every undo is synchronous. */
  undoAllSync(): string[] {
    const failed: string[] = [];
    while (this.steps.length) {
      const s = this.steps.pop()!;
      try {
        const r = s.undo();
        if (r instanceof Promise) r.catch(() => undefined);
      } catch (e) {
        failed.push(`${s.what}: ${e instanceof Error ? e.message : String(e)}`);
      }
    }
    return failed;
  }
}

// Fault injection for the crash-safety tests: QEMU_NET_HELPER_FAULT_AFTER_STEP=N
// kills this process with SIGKILL right after the Nth setup step registered
// its undo (and journal entry): the worst moment for a real crash. Only a
// real root caller may ask for it: anyone else could kill a privileged run at
// will.
const faultAt = callerIsRoot() ? Number(process.env[ENV.fault] ?? 0) : 0;
function faultInjection(step: number): void {
  if (faultAt > 0 && step === faultAt) process.kill(process.pid, 'SIGKILL');
}
