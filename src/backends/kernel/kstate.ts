// Small on-disk state for kernel implementations whose objects are shared
// between endpoints (a NAT network, a proxy-ARP setting on an uplink). Every
// read-modify-write happens under an flock, so two helpers started at the
// same moment (QEMU hot-plugging two NICs) cannot both decide "I am first" or
// "I am last". Lock files are never deleted: deleting a lock file while
// someone waits on it would hand the two of them different locks.
import { closeSync, constants as fsc, openSync } from 'node:fs';
import { dirname } from 'node:path';
import { SetupError } from '../../errors.js';
import { SysError } from '../../sys/libc.js';
import { flockExclusive } from '../../sys/flock.js';
import { ensureDir, readFileOrNull, writeFileAtomic } from '../../state/atomic-file.js';

/** Longest wait for another helper's lock; QEMU waits for us with no timeout of its own. */
const LOCK_TIMEOUT_MS = 10_000;

/**
 * Runs fn holding an exclusive flock on `lockPath` (created if missing).
 * Polls instead of blocking, so a stuck holder turns into an error after
 * `timeoutMs` rather than a QEMU that hangs forever.
 */
export function withLock<T>(lockPath: string, fn: () => T, timeoutMs = LOCK_TIMEOUT_MS): T {
  ensureDir(dirname(lockPath), 0o755);
  // O_NOFOLLOW: a symbolic link planted at the lock path is an error, never followed.
  const fd = openSync(lockPath, fsc.O_WRONLY | fsc.O_CREAT | fsc.O_APPEND | fsc.O_NOFOLLOW, 0o600);
  try {
    let locked: boolean;
    try {
      locked = flockExclusive(fd, timeoutMs);
    } catch (e) {
      if (e instanceof SysError) throw new SetupError(`cannot lock ${lockPath}: ${e.code}`);
      throw e;
    }
    if (!locked) throw new SetupError(`another qemu-net-helper has held ${lockPath} for more than ${timeoutMs / 1000} s`, 'look for a stuck qemu-net-helper process');
    return fn();
  } finally {
    closeSync(fd); // releases the lock
  }
}

export function readJson<T>(path: string): T | null {
  let text: string | null;
  try {
    text = readFileOrNull(path); // never through a symbolic link
  } catch {
    return null;
  }
  if (text === null) return null;
  try {
    return JSON.parse(text) as T;
  } catch {
    // A torn or hand-edited file is treated as absent; the callers' kernel
    // checks decide what is really there.
    return null;
  }
}

/** Writes JSON whole (state/atomic-file.ts): a crash never leaves half a file. */
export function writeJson(path: string, value: unknown): void {
  ensureDir(dirname(path), 0o755);
  // 0644: dnsmasq reads some of these files after dropping to user nobody.
  writeFileAtomic(path, JSON.stringify(value, null, 2) + '\n', 0o644);
}
