// File seals (memfd). A front-end that shrinks the file behind guest memory
// after we mapped it turns our next access into SIGBUS, which kills the whole
// process; a file sealed against shrinking cannot be shrunk by anyone.
import { c } from './libc.js';

const F_ADD_SEALS = 1033;
const F_GET_SEALS = 1034;
const F_SEAL_SEAL = 0x1;
export const F_SEAL_SHRINK = 0x2;

export type SealState = 'sealed' | 'added' | 'unsealable';

/**
 * Makes sure nobody can shrink the file: already sealed (QEMU's
 * memory-backend-memfd seals by default), sealed now by us (a memfd created
 * with MFD_ALLOW_SEALING but not sealed), or impossible (not a memfd, or a
 * memfd created without MFD_ALLOW_SEALING, as DPDK's --no-huge memory is).
 */
export function ensureShrinkSeal(fd: number): SealState {
  const seals = Number(c.fcntl(fd, F_GET_SEALS, 0));
  if (seals < 0) return 'unsealable';
  if (seals & F_SEAL_SHRINK) return 'sealed';
  if (seals & F_SEAL_SEAL) return 'unsealable';
  return Number(c.fcntl(fd, F_ADD_SEALS, F_SEAL_SHRINK)) === 0 ? 'added' : 'unsealable';
}

/** The file's seals, or -1 when it cannot have any. */
export function getSeals(fd: number): number {
  const s = Number(c.fcntl(fd, F_GET_SEALS, 0));
  return s < 0 ? -1 : s;
}
