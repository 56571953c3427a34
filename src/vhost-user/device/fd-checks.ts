// Checks on the fds a front-end hands over, before anything uses them: guest
// memory and the dirty log must be sealed against shrinking (a truncated file
// under a mapping is a SIGBUS for the whole process), notification fds must
// be eventfds we can never block on.
import { fstatSync } from 'node:fs';
import { closeFd } from '../../sys/libc.js';
import { isEventFd } from '../../sys/eventfd.js';
import { ensureShrinkSeal } from '../../sys/seals.js';
import { setNonBlocking } from '../../sys/unix-socket.js';
import { DeviceError } from './errors.js';

/**
 * Seals each region file against shrinking (or finds it sealed). Non-files
 * are left to the data path, which refuses them with its own reason.
 */
export function sealRegions(fds: number[], allowUnsealed: boolean): void {
  for (const fd of fds) {
    let file = false;
    try { file = fstatSync(fd).isFile(); } catch { /* not ours to judge here */ }
    if (!file) continue;
    if (ensureShrinkSeal(fd) === 'unsealable' && !allowUnsealed) {
      throw new Error('a memory region file is not sealed against shrinking (F_SEAL_SHRINK) and cannot be sealed: truncating it would kill every port with SIGBUS '
        + '(QEMU\'s memory-backend-memfd seals by default; for a trusted front-end that cannot seal, run serve with --allow-unsealed-memory)');
    }
  }
}

/**
 * Kick/call/err fds must be eventfds (anything else could block or abort the
 * poller) and are made non-blocking: a call write on a full counter must drop
 * the notification, not freeze the worker every port shares. QEMU and DPDK
 * create theirs non-blocking anyway, so this changes nothing for them.
 */
export function checkNotifyFd(req: { kind: string; index: number; nofd: boolean; fd?: number }): void {
  if (req.nofd || req.fd === undefined) return;
  if (!isEventFd(req.fd)) {
    closeFd(req.fd);
    throw new DeviceError(`${req.kind} for ring ${req.index}: the fd is not an eventfd`);
  }
  setNonBlocking(req.fd, true);
}
