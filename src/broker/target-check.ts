// Before the broker takes an fd out of a client process (pidfd_getfd, which
// root may do to any process), it makes sure that process is still the
// caller's own: all its uids and gids are the caller's and it is dumpable
// (a process that ran a setuid program is neither), and that the fd is a
// socket — all read from /proc without touching the file behind the fd.
import { readFileSync, readlinkSync, statSync } from 'node:fs';
import type { Caller } from '../access/caller.js';
import { AccessDeniedError, BadFdError, SetupError } from '../errors.js';

export interface ProcIds {
  /** Real, effective, saved and filesystem uid. */
  uids: number[];
  gids: number[];
}

/** The Uid: and Gid: lines of /proc/PID/status; null when either is missing or malformed. */
export function parseStatusIds(text: string): ProcIds | null {
  const ids = (key: string): number[] | null => {
    const m = new RegExp(`^${key}:\\s+(\\d+)\\s+(\\d+)\\s+(\\d+)\\s+(\\d+)\\s*$`, 'm').exec(text);
    return m ? m.slice(1, 5).map(Number) : null;
  };
  const uids = ids('Uid');
  const gids = ids('Gid');
  return uids && gids ? { uids, gids } : null;
}

/** Why ids (and the /proc/PID owner, which is root for a non-dumpable process) are not all the caller's; null when they are. */
export function foreignIds(ids: ProcIds, procOwnerUid: number, caller: { uid: number; gid: number }): string | null {
  if (ids.uids.some((u) => u !== caller.uid)) return `its uids are ${ids.uids.join('/')}`;
  if (ids.gids.some((g) => g !== caller.gid)) return `its gids are ${ids.gids.join('/')}`;
  if (procOwnerUid !== caller.uid) return 'it is not dumpable (it ran a setuid or privileged program)';
  return null;
}

/** The pid a pidfd stands for in our pid namespace (its fdinfo), or -1 once the process has exited. */
function pidOfPidfd(pidfd: number): number {
  const m = /^Pid:\s+(-?\d+)\s*$/m.exec(readFileSync(`/proc/self/fdinfo/${pidfd}`, 'utf8'));
  if (!m) throw new SetupError('this kernel does not show the pid of a pidfd (Linux 5.4+ needed)');
  return Number(m[1]);
}

export interface TargetFacts {
  ids: ProcIds | null;
  procOwnerUid: number;
  /** readlink of /proc/PID/fd/N ("socket:[ino]" for a socket), null when the fd is not open. */
  fdLink: string | null;
}

/**
 * Reads the facts about the process behind `pidfd` and its fd `fd`. /proc/PID
 * is read between two looks at the pidfd: a pid is not reused while its
 * process lives, so if the pidfd still names that pid afterwards, what was
 * read belongs to the pidfd's process.
 */
function targetFacts(pidfd: number, fd: number): TargetFacts {
  const gone = (): SetupError => new SetupError('the helper process exited before the broker could serve it');
  const pid = pidOfPidfd(pidfd);
  if (pid <= 0) throw gone();
  let facts: TargetFacts;
  try {
    const ids = parseStatusIds(readFileSync(`/proc/${pid}/status`, 'utf8'));
    const procOwnerUid = statSync(`/proc/${pid}`).uid;
    let fdLink: string | null = null;
    try { fdLink = readlinkSync(`/proc/${pid}/fd/${fd}`); } catch { /* not open */ }
    facts = { ids, procOwnerUid, fdLink };
  } catch {
    throw gone();
  }
  if (pidOfPidfd(pidfd) !== pid) throw gone();
  return facts;
}

/** Refuses (exit 3) unless the process behind pidfd is the caller's own, and (exit 6) unless its fd is a socket. `label` names the fd as the caller does. */
export function checkTakeable(pidfd: number, fd: number, caller: Caller, label: string): void {
  const f = targetFacts(pidfd, fd);
  if (!caller.isRoot) {
    const why = f.ids ? foreignIds(f.ids, f.procOwnerUid, caller) : 'its status cannot be read';
    if (why) {
      throw new AccessDeniedError(`access denied: ${label}: the process that asked is no longer the caller's own (${why}); the broker takes fds only from processes wholly of uid ${caller.uid}`,
        'run the helper directly from QEMU or libvirt, not from a process that changes its identity');
    }
  }
  const hint = 'the helper must be run by QEMU or libvirt, which pass one end of a socketpair';
  if (f.fdLink === null) throw new BadFdError(`${label} is not an open file descriptor`, hint);
  if (!f.fdLink.startsWith('socket:[')) throw new BadFdError(`${label} is not a socket`, hint);
}
