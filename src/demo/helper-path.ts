// The helper path to give QEMU: QEMU runs a helper= string that contains a
// space through `sh -c`, so a checkout under a path with spaces (or other
// characters sh would interpret) is reached through a symlink without them.
import { chmodSync, symlinkSync } from 'node:fs';
import { basename, join } from 'node:path';

/** Characters that make QEMU's helper= string mean something else than one path. */
const SPLITS = /[\s'"\\$`;&|<>()*?#~!{}[\]]/;

/** Whether QEMU would run `bin` through sh -c or sh would change it. */
export function qemuWouldSplit(bin: string): boolean { return SPLITS.test(bin); }

/** `bin` itself when QEMU can exec it as written, else a symlink to it made in `dir` (a directory of ours). */
export function qemuHelperPath(bin: string, dir: string): string {
  if (!SPLITS.test(bin)) return bin;
  if (SPLITS.test(dir)) throw new Error(`no path for QEMU's helper=: both ${bin} and ${dir} contain characters sh would split or expand`);
  const link = join(dir, basename(bin));
  symlinkSync(bin, link);
  // An unprivileged QEMU must reach the link.
  chmodSync(dir, 0o755);
  return link;
}
