// The demo's (and tests') proof that QEMU got its taps: tun names in /proc/PID/fdinfo.
import { readdirSync, readFileSync } from 'node:fs';

/**
 * Names of the tun/tap interfaces a process holds fds on: the kernel prints
 * `iff: NAME` in /proc/PID/fdinfo for tun fds. This is the proof that QEMU
 * really got the tap (QMP only echoes the options it was given).
 */
export function tapsHeldBy(pid: number): string[] {
  const out: string[] = [];
  for (const fd of readdirSync(`/proc/${pid}/fdinfo`)) {
    try {
      const m = /^iff:\s*(\S+)/m.exec(readFileSync(`/proc/${pid}/fdinfo/${fd}`, 'utf8'));
      if (m) out.push(m[1]!);
    } catch { /* fd closed meanwhile */ }
  }
  return out;
}
