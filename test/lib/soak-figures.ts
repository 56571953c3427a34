// Figures the soak tests report and bound: a latency percentile and a
// process's resident memory.
import { readFileSync } from 'node:fs';

/** The 99th percentile (nearest rank). */
export function p99(xs: readonly number[]): number {
  const s = [...xs].sort((a, b) => a - b);
  return s[Math.min(s.length - 1, Math.ceil(0.99 * s.length) - 1)]!;
}

/** VmRSS of a live process, in KiB. */
export function rssKb(pid: number): number {
  return Number(/^VmRSS:\s+(\d+)/m.exec(readFileSync(`/proc/${pid}/status`, 'utf8'))![1]);
}
