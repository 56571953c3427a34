// Paths a benchmark made (socket directories, DPDK run directories) removed
// when it is done with them, or at process exit if it never got there
// (an error or Ctrl-C: bench/run.ts turns signals into process.exit).
import { rmSync } from 'node:fs';

const pending = new Set<string>();
process.on('exit', () => { for (const p of pending) rmSync(p, { recursive: true, force: true }); });

/** Registers `path`; the returned function removes it now. */
export function removeLater(path: string): () => void {
  pending.add(path);
  return () => {
    rmSync(path, { recursive: true, force: true });
    pending.delete(path);
  };
}

/** DPDK keeps a directory per --file-prefix under /var/run/dpdk. */
export const dpdkRunDir = (prefix: string): string => `/var/run/dpdk/${prefix}`;
