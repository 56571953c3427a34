// Removes tsc's output folders before a build: tsc writes what the sources
// are now but never deletes the output of a source that was moved or split,
// and `npm test` globs dist/test, so a stale compiled test would run beside
// its successors (and a stale module could still be imported). tsc compiles
// everything each time anyway (no incremental build), so nothing is lost.
import { rmSync } from 'node:fs';

for (const dir of ['dist/src', 'dist/test', 'dist/bench']) rmSync(dir, { recursive: true, force: true });
