// Every setup step registers its undo here as soon as the thing it made
// exists; a failure anywhere later undoes everything in reverse order, so a
// refused or crashed setup leaves nothing behind.
export interface UndoStep {
  what: string;
  undo: () => void | Promise<void>;
}

export class Rollback {
  private steps: UndoStep[] = [];

  add(what: string, undo: () => void | Promise<void>): void {
    this.steps.push({ what, undo });
  }

  get size(): number { return this.steps.length; }

  /** Takes over another rollback's steps (a sub-setup that succeeded), after ours. */
  adopt(other: Rollback): void {
    this.steps.push(...other.steps);
    other.steps = [];
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

  /** Synchronous variant for the helper's fast path, where every undo is synchronous. */
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
