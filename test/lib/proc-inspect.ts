// A process as tests see it from /proc: its open fds, its mappings of a
// memfd, whether it is still alive (leak and survival checks).
import { existsSync, fstatSync, readdirSync, readFileSync, readlinkSync } from 'node:fs';

/** Open fds of a process (entries of /proc/PID/fd). */
export function fdCount(pid: number | 'self'): number {
  return fdList(pid).length;
}

/**
 * "N -> target" for each open fd. readdirSync holds an fd on the directory
 * while it reads, which then fails readlink: skipped, so counts taken from
 * inside this process do not include it.
 */
export function fdList(pid: number | 'self'): string[] {
  const dir = `/proc/${pid}/fd`;
  const out: string[] = [];
  for (const name of readdirSync(dir)) {
    try {
      out.push(`${name} -> ${readlinkSync(`${dir}/${name}`)}`);
    } catch { /* gone meanwhile (the directory's own fd) */ }
  }
  return out;
}

/** Mappings in /proc/PID/maps whose path contains `needle` (a memfd name). */
export function mappingsOf(pid: number, needle: string): string[] {
  return readFileSync(`/proc/${pid}/maps`, 'utf8').split('\n').filter((l) => l.includes(needle));
}

/** True while the process exists and is not a zombie. */
export function processAlive(pid: number): boolean {
  if (!existsSync(`/proc/${pid}`)) return false;
  try {
    const stat = readFileSync(`/proc/${pid}/stat`, 'utf8');
    return stat.slice(stat.lastIndexOf(')') + 2)[0] !== 'Z';
  } catch {
    return false;
  }
}

/** Whether fd is open in this process. */
export function fdOpen(fd: number): boolean {
  try { fstatSync(fd); return true; } catch { return false; }
}
