// Who owns a piece of durable state. A bare pid is not enough: pids are reused,
// so a record naming pid 4242 could outlive its QEMU and then "belong" to an
// unrelated process that got the same number. The kernel's start time of the
// process (/proc/<pid>/stat field 22, in clock ticks since boot) never repeats
// for one pid within a boot, so (pid, start time) names one process exactly.
import { readFileSync } from 'node:fs';
import { z } from 'zod';

export interface OwnerRef {
  pid: number;
  /** /proc/<pid>/stat field 22 as a decimal string (it can exceed 2^53 in theory). */
  startTime: string;
}

const procRoot = '/proc';

export type ProcState = { alive: true; startTime: string } | { alive: false } | { alive: 'unknown'; reason: string };

/** Parses one /proc/<pid>/stat line; null when it is not one. */
export function parseProcStat(line: string): { state: string; startTime: string } | null {
  // comm (field 2) is in parentheses and may itself hold spaces and ')', so
  // fields are counted from the last ')': after it come field 3 (state) on.
  const close = line.lastIndexOf(')');
  if (close < 0) return null;
  const rest = line.slice(close + 1).trim().split(/\s+/);
  const state = rest[0];
  const startTime = rest[22 - 3];
  if (!state || !startTime || !/^\d+$/.test(startTime)) return null;
  return { state, startTime };
}

/** Liveness and start time of a pid, as this process can see it. */
export function procState(pid: number): ProcState {
  if (!Number.isSafeInteger(pid) || pid <= 0) return { alive: false };
  let text: string;
  try {
    text = readFileSync(`${procRoot}/${pid}/stat`, 'utf8');
  } catch (e) {
    const code = (e as NodeJS.ErrnoException).code;
    if (code === 'ENOENT' || code === 'ESRCH') return { alive: false };
    // hidepid=, a foreign pid namespace...: we cannot tell, and guessing
    // "dead" would let someone steal a live guest's VF.
    return { alive: 'unknown', reason: `cannot read ${procRoot}/${pid}/stat: ${code ?? String(e)}` };
  }
  const st = parseProcStat(text);
  if (!st) return { alive: 'unknown', reason: `unparsable ${procRoot}/${pid}/stat` };
  // A zombie has exited; it only waits for its parent to reap it.
  if (st.state === 'Z' || st.state === 'X' || st.state === 'x') return { alive: false };
  return { alive: true, startTime: st.startTime };
}

/** The OwnerRef of a live process; throws when the pid does not exist. */
export function ownerOf(pid: number): OwnerRef {
  const s = procState(pid);
  if (s.alive !== true) {
    throw new Error(s.alive === false ? `process ${pid} does not exist` : s.reason);
  }
  return { pid, startTime: s.startTime };
}

export function selfOwner(): OwnerRef { return ownerOf(process.pid); }

/**
 * Whether the process a record names still runs: 'alive' (same pid, same
 * start time), 'gone' (no such pid, a zombie, or the pid now belongs to a
 * later process), or 'unknown' (we cannot see it: treat as alive).
 */
export function ownerStatus(o: OwnerRef): 'alive' | 'gone' | 'unknown' {
  return judgeOwner(o, procState(o.pid));
}

/** ownerStatus's rule, on a process state already read. */
export function judgeOwner(o: OwnerRef, s: ProcState): 'alive' | 'gone' | 'unknown' {
  if (s.alive === false) return 'gone';
  if (s.alive === 'unknown') return 'unknown';
  return s.startTime === o.startTime ? 'alive' : 'gone';
}

/** An OwnerRef as records hold it (other fields are tolerated: records are ours, written atomically). */
export const ownerRefSchema = z.object({ pid: z.number().int().positive(), startTime: z.string().regex(/^\d+$/) });

export function isOwnerRef(v: unknown): v is OwnerRef { return ownerRefSchema.safeParse(v).success; }

export function sameOwner(a: OwnerRef, b: OwnerRef): boolean {
  return a.pid === b.pid && a.startTime === b.startTime;
}
