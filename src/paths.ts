import { existsSync, readFileSync } from 'node:fs';
import { dirname, join, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';

let root: string | undefined;

/**
 * The installed package's root, found from this module's own location. Works
 * from src (tests), dist/src (built) and the dist/*.cjs bundles alike.
 */
export function projectRoot(): string {
  if (root) return root;
  let dir = dirname(fileURLToPath(import.meta.url));
  for (let i = 0; i < 5; i++) {
    const pkg = join(dir, 'package.json');
    if (existsSync(pkg) && (JSON.parse(readFileSync(pkg, 'utf8')) as { name?: string }).name === 'qemu-net-helper') return (root = dir);
    dir = resolve(dir, '..');
  }
  throw new Error('cannot find the qemu-net-helper package root');
}

export function binPath(): string { return join(projectRoot(), 'bin/qemu-net-helper.cjs'); }
