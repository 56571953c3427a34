// Waiting for an exclusive flock without blocking forever: the helper runs
// while QEMU waits for it with no timeout of its own, so a stuck holder must
// become an error, not a hang. Shared by VF claims and the kernel
// implementations' shared-state locks.
import { c, check, SysError } from './libc.js';

const LOCK_EX = 2;
const LOCK_NB = 4;
const EINTR = 4;
const EWOULDBLOCK = 11;

const sleepCell = new Int32Array(new SharedArrayBuffer(4));

/** Sleeps the thread (synchronous paths only: the helper is a one-shot process). */
export function sleepMs(ms: number): void {
  Atomics.wait(sleepCell, 0, 0, ms);
}

/**
 * flock(LOCK_EX|LOCK_NB) retried for up to waitMs; false when still busy.
 * Other errors are thrown (SysError).
 */
export function flockExclusive(fd: number, waitMs: number): boolean {
  const deadline = Date.now() + waitMs;
  for (;;) {
    try {
      check(c.flock(fd, LOCK_EX | LOCK_NB), 'flock');
      return true;
    } catch (e) {
      if (!(e instanceof SysError)) throw e;
      if (e.errno === EINTR) continue;
      if (e.errno !== EWOULDBLOCK) throw e;
    }
    const left = deadline - Date.now();
    if (left <= 0) return false;
    // Jitter keeps waiting processes from retrying in lockstep.
    sleepMs(Math.min(left, 1 + Math.floor(Math.random() * 4)));
  }
}
