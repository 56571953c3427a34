// Process file descriptors: a handle on one process that a reused pid can
// never redirect. The broker gets its client's with SO_PEERPIDFD (Linux 6.5+;
// pidfd_open of the SO_PEERCRED pid, checked, before that) and takes QEMU's
// socket out of the client with pidfd_getfd, so the client itself never needs
// native code to pass an fd.
import { c, check, SysError } from './libc.js';

const SYS_pidfd_open = 434;
const SYS_pidfd_getfd = 438;
const SOL_SOCKET = 1;
const SO_PEERGROUPS = 59;
const SO_PEERPIDFD = 77;
const ENOPROTOOPT = 92;

export function pidfdOpen(pid: number): number {
  return check(c.syscall3(SYS_pidfd_open, pid, 0, 0), 'pidfd_open', `pid ${pid}`);
}

/** A duplicate (close-on-exec) of fd `targetFd` of the process behind `pidfd`; needs ptrace rights over it (root). */
export function pidfdGetfd(pidfd: number, targetFd: number): number {
  return check(c.syscall3(SYS_pidfd_getfd, pidfd, targetFd, 0), 'pidfd_getfd', `fd ${targetFd}`);
}

/** The peer's pidfd as the kernel took it at connect time, or null where the kernel lacks SO_PEERPIDFD. */
export function peerPidfd(sock: number): number | null {
  const val = Buffer.alloc(4);
  const len = [4];
  try {
    check(c.getsockopt(sock, SOL_SOCKET, SO_PEERPIDFD, val, len), 'getsockopt', 'SO_PEERPIDFD');
  } catch (e) {
    if (e instanceof SysError && e.errno === ENOPROTOOPT) return null;
    throw e;
  }
  return val.readInt32LE(0);
}

/** The peer's supplementary groups at connect time (SO_PEERGROUPS). */
export function peerGroups(sock: number): number[] {
  let size = 64 * 4;
  for (let round = 0; round < 3; round++) {
    const val = Buffer.alloc(size);
    const len = [size];
    try {
      check(c.getsockopt(sock, SOL_SOCKET, SO_PEERGROUPS, val, len), 'getsockopt', 'SO_PEERGROUPS');
    } catch (e) {
      // ERANGE: the kernel wrote the size it needs into len.
      if (e instanceof SysError && e.code === 'ERANGE' && len[0]! > size) { size = len[0]!; continue; }
      throw e;
    }
    const out: number[] = [];
    for (let off = 0; off + 4 <= len[0]!; off += 4) out.push(val.readUInt32LE(off));
    return out;
  }
  throw new SysError('getsockopt', 34, 'SO_PEERGROUPS keeps growing');
}
