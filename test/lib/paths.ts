import { dirname, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';

// Compiled tests live in dist/test/lib; the project root is three levels up.
export const ROOT = resolve(dirname(fileURLToPath(import.meta.url)), '../../..');
export const BIN = resolve(ROOT, 'bin/qemu-net-helper.cjs');
