// The watcher: waits for an endpoint's owner (QEMU) to exit, then releases
// the endpoint. The direct helper starts it as a small detached process that
// holds nothing QEMU waits for; the broker runs it in-process for everything
// it made. If a watcher is killed, `gc` (or the restarted broker) is the
// safety net.
import { spawn } from 'node:child_process';
import { binPath } from '../paths.js';
import type { HostContext } from '../host/context.js';
import { closeFd } from '../sys/libc.js';
import { pidfdOpen } from '../sys/pidfd.js';
import { unwatch, watchReadable } from '../sys/poller.js';
import { loadEndpoint, saveEndpoint } from '../state/endpoints.js';
import { ownerOf, ownerStatus, type OwnerRef } from '../state/owner.js';
import { fdTargetOf, holdersOf, holds } from './holders.js';
import { releaseEndpoint } from './release.js';

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

/** Starts `qemu-net-helper watch --id ID` detached, with a clean environment and stdio to /dev/null. */
export function spawnWatcher(id: string, env: NodeJS.ProcessEnv): number {
  const child = spawn(process.execPath, [binPath(), 'watch', '--id', id], { detached: true, stdio: 'ignore', env });
  child.unref();
  return child.pid ?? -1;
}

/**
 * Waits until the endpoint is unused, then releases it. The owner is whoever
 * holds the endpoint's fd: if the socketpair peer (libvirtd) hands it on to
 * QEMU, the watcher adopts QEMU as owner (records it) once the peer itself no
 * longer holds the fd; when the owner exits and nobody else holds it, the
 * endpoint goes. An endpoint whose owner could not be identified is adopted
 * by the first holder found, and released when nobody holds it.
 */
export async function watchEndpoint(id: string, host: HostContext, pollMs = 1000): Promise<void> {
  let rec = loadEndpoint(host.stateDir, id);
  if (!rec) return;
  if (!rec.owner && rec.lifetime !== 'fd') return; // manual: until `down`
  const target = fdTargetOf(rec);
  const netns = rec.info.netns as string | undefined;
  let orphaned = 0;
  let owner: OwnerRef | null = rec.owner;
  // One exit waiter per owner (a pidfd in the event loop), reused across polls.
  let ownerExit: Promise<boolean> = owner ? waitForExit(owner).then(() => true) : new Promise<boolean>(() => undefined);
  for (;;) {
    // Wake on the owner's exit, or every pollMs to see whether the fd moved on.
    const exited = await Promise.race([ownerExit, new Promise<boolean>((r) => setTimeout(() => r(false), pollMs))]);
    const now = loadEndpoint(host.stateDir, id);
    if (!now) return; // `down` released it meanwhile
    rec = now;
    if (!target) {
      if (exited) break;
      continue;
    }
    if (!exited && owner && holds(owner.pid, target)) {
      orphaned = 0;
      continue;
    }
    const next = holdersOf(target, [process.pid], netns).find((pid) => pid !== owner?.pid);
    if (next !== undefined) {
      try {
        rec.owner = ownerOf(next);
        saveEndpoint(host.stateDir, rec);
        owner = rec.owner;
        ownerExit = waitForExit(owner).then(() => true);
        orphaned = 0;
        continue;
      } catch { /* it just exited */ }
    }
    // Nobody holds it: the owner exited, or handed the fd to a process that
    // is already gone (or dropped it). Seen twice in a row, so an fd still in
    // flight in the socket (sent, not yet received) is not taken for dead.
    if ((exited && owner) || ++orphaned >= 2) break;
  }
  const last = loadEndpoint(host.stateDir, id);
  if (last) releaseEndpoint(last, host);
}
