import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { dirname, join, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';
import { qemuHelperPath, qemuWouldSplit } from '../../src/demo/helper-path.js';

// Compiled tests live in dist/test/lib; the project root is three levels up.
export const ROOT = resolve(dirname(fileURLToPath(import.meta.url)), '../../..');
const REAL_BIN = resolve(ROOT, 'bin/qemu-net-helper.cjs');

/**
 * The program, as tests hand it to QEMU (helper=...), sh strings and spawn:
 * the checkout's own file, or, in a checkout whose path has spaces, a
 * symlink to it that QEMU does not split (removed at exit).
 */
export const BIN = ((): string => {
  if (!qemuWouldSplit(REAL_BIN)) return REAL_BIN;
  const dir = mkdtempSync(join(tmpdir(), 'qnh-bin-'));
  process.on('exit', () => rmSync(dir, { recursive: true, force: true }));
  return qemuHelperPath(REAL_BIN, dir);
})();
