// Waiting for an endpoint's owner to exit: a pidfd in the event loop, else
// polling /proc. Below both the watcher and the socket relay, which each wait
// on the owner recorded for their endpoint.
import { closeFd } from '../sys/libc.js';
import { pidfdOpen } from '../sys/pidfd.js';
import { unwatch, watchReadable } from '../sys/poller.js';
import { ownerStatus, type OwnerRef } from './owner.js';

/** Resolves when the process exits: a pidfd in the event loop, else polling /proc. */
export function waitForExit(owner: OwnerRef, pollMs = 500): Promise<void> {
  return new Promise((resolve) => {
    if (ownerStatus(owner) === 'gone') return resolve();
    let pidfd = -1;
    try { pidfd = pidfdOpen(owner.pid); } catch { pidfd = -1; }
    // The pid could have been reused between the check and pidfd_open.
    if (pidfd >= 0 && ownerStatus(owner) === 'gone') {
      closeFd(pidfd);
      return resolve();
    }
    if (pidfd >= 0 && watchReadable(pidfd, () => { unwatch(pidfd); closeFd(pidfd); resolve(); })) return;
    const t = setInterval(() => {
      if (ownerStatus(owner) === 'gone') {
        clearInterval(t);
        resolve();
      }
    }, pollMs);
  });
}
