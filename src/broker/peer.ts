// Who is on the other end of a broker connection, as the kernel says: uid,
// gid and pid (SO_PEERCRED), supplementary groups (SO_PEERGROUPS), and a pidfd
// of that very process (SO_PEERPIDFD), through which the broker takes QEMU's
// socket. Nothing the client writes is used to identify it.
import { readFileSync } from 'node:fs';
import type { Socket } from 'node:net';
import { Caller } from '../access/caller.js';
import { SetupError } from '../errors.js';
import { closeFd } from '../sys/libc.js';
import { peerGroups, peerPidfd, pidfdOpen } from '../sys/pidfd.js';
import { peerCred } from '../sys/unix-fd.js';
import { procState } from '../state/owner.js';

export interface Peer {
  caller: Caller;
  /** A pidfd of the client process; the broker closes it when the request is done. */
  pidfd: number;
  /** The client's command name and its parent's, for the log. */
  comm: string;
}

/** The fd under a connected net.Socket (libuv's pipe handle keeps it; Node has no public accessor). */
export function socketFd(sock: Socket): number {
  const fd = (sock as unknown as { _handle?: { fd?: unknown } })._handle?.fd;
  if (typeof fd !== 'number' || fd < 0) throw new SetupError('cannot find the fd of a broker connection');
  return fd;
}

/** "node<qemu-system-x86": the client's command and its parent's (the helper's is always node; its parent says who asked). */
function describeProcess(pid: number): string {
  const comm = (p: number | string): string => {
    try { return readFileSync(`/proc/${p}/comm`, 'utf8').trim(); } catch { return '?'; }
  };
  let ppid = '';
  try { ppid = /^PPid:\s*(\d+)/m.exec(readFileSync(`/proc/${pid}/status`, 'utf8'))?.[1] ?? ''; } catch { /* gone */ }
  return ppid && ppid !== '0' ? `${comm(pid)}<${comm(ppid)}` : comm(pid);
}

export function identify(sock: Socket): Peer {
  const fd = socketFd(sock);
  const cred = peerCred(fd);
  const groups = peerGroups(fd);
  let pidfd = peerPidfd(fd);
  if (pidfd === null) {
    // Older kernels: open a pidfd for the pid, then make sure it is still the
    // process that connected (it started before the connection was made).
    const before = procState(cred.pid);
    pidfd = pidfdOpen(cred.pid);
    const after = procState(cred.pid);
    if (before.alive !== true || after.alive !== true || before.startTime !== after.startTime) {
      closeFd(pidfd);
      throw new SetupError(`client pid ${cred.pid} went away while connecting`);
    }
  }
  return { caller: new Caller(cred.uid, cred.gid, groups, cred.pid), pidfd, comm: describeProcess(cred.pid) };
}
