// Durable state files are replaced, never rewritten in place: a reader (or a
// crash) must see either the old record or the new one, never half of each.
// The recipe is the classic one: write a temp file in the same directory (a
// rename is only atomic within one file system), fsync it so the data is on
// disk before the name points at it, rename over the target, then fsync the
// directory so the rename itself survives a power cut.
import { closeSync, constants as fsc, fsyncSync, mkdirSync, openSync, readdirSync, readFileSync, renameSync, unlinkSync, writeSync } from 'node:fs';
import { randomBytes } from 'node:crypto';
import { basename, dirname, join } from 'node:path';
import { checkOwnDir } from './state-dir.js';

/**
 * Makes a state subdirectory (and missing parents) and checks it and its
 * parent: a symbolic link planted at either would send our records and
 * locks wherever it points. Every state subdirectory is made through here,
 * so the whole chain below the state directory gets checked.
 */
export function ensureDir(dir: string, mode = 0o700): void {
  mkdirSync(dir, { recursive: true, mode });
  checkOwnDir(dirname(dir), 'state directory');
  checkOwnDir(dir, 'state directory');
}

function fsyncDir(dir: string): void {
  let fd = -1;
  try {
    fd = openSync(dir, 'r');
    fsyncSync(fd);
  } catch {
    // Some file systems (and tmpfs, where /run lives) do not need or allow
    // it; the rename is already atomic for readers either way.
  } finally {
    if (fd >= 0) closeSync(fd);
  }
}

/** Atomically replaces `path` with `data` (mode 0600 by default). */
export function writeFileAtomic(path: string, data: string | Uint8Array, mode = 0o600): void {
  const dir = dirname(path);
  // Leading dot + pid + random: never a name another writer or a reader's
  // directory listing (which skips dot files) would use.
  const tmp = join(dir, `.${basename(path)}.${process.pid}.${randomBytes(4).toString('hex')}.tmp`);
  const fd = openSync(tmp, 'wx', mode);
  try {
    try {
      const buf = typeof data === 'string' ? Buffer.from(data) : data;
      let off = 0;
      while (off < buf.length) off += writeSync(fd, buf, off, buf.length - off);
      fsyncSync(fd);
    } finally {
      closeSync(fd);
    }
    renameSync(tmp, path);
  } catch (e) {
    try { unlinkSync(tmp); } catch { /* already renamed or never made */ }
    throw e;
  }
  fsyncDir(dir);
}

/** Removes a file and syncs its directory; already gone is success. */
export function removeFileDurable(path: string): boolean {
  try {
    unlinkSync(path);
  } catch (e) {
    if ((e as NodeJS.ErrnoException).code === 'ENOENT') return false;
    throw e;
  }
  fsyncDir(dirname(path));
  return true;
}

/**
 * File contents, or null when it does not exist. A symbolic link is never
 * followed (ELOOP): a record is a file we wrote, not whatever a link points at.
 */
export function readFileOrNull(path: string): string | null {
  let fd: number;
  try {
    fd = openSync(path, fsc.O_RDONLY | fsc.O_NOFOLLOW);
  } catch (e) {
    if ((e as NodeJS.ErrnoException).code === 'ENOENT') return null;
    throw e;
  }
  try {
    return readFileSync(fd, 'utf8');
  } finally {
    closeSync(fd);
  }
}

/**
 * Removes temp files of writers that died before their rename (SIGKILL in the
 * middle of writeFileAtomic): `.NAME.PID.RAND.tmp` whose PID no longer runs.
 * Readers already skip them; this only keeps the directory clean.
 */
export function removeStaleTemps(dir: string, alive: (pid: number) => boolean): string[] {
  let names: string[];
  try { names = readdirSync(dir); } catch { return []; }
  const removed: string[] = [];
  for (const n of names) {
    const m = /^\..+\.(\d+)\.[0-9a-f]{8}\.tmp$/.exec(n);
    if (!m || alive(Number(m[1]))) continue;
    try {
      unlinkSync(join(dir, n));
      removed.push(n);
    } catch { /* another gc got it */ }
  }
  return removed;
}
