// The watcher: waits for an endpoint's owner (QEMU) to exit, then releases
// the endpoint. The direct helper starts it as a small detached process that
// holds nothing QEMU waits for; the broker runs it in-process for everything
// it made. If a watcher is killed, `gc` (or the restarted broker) is the
// safety net.
import { spawn } from 'node:child_process';
import { binPath } from '../paths.js';
import type { HostContext } from '../host/context.js';
import { loadEndpoint, saveEndpoint } from '../state/endpoints.js';
import { ownerOf, type OwnerRef } from '../state/owner.js';
import { waitForExit } from '../state/owner-exit.js';
import { fdTargetOf, holdersOf, holds } from './holders.js';
import { releaseEndpoint } from './release.js';
import { watchable, watchStep } from './watch-decision.js';

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
  if (!watchable(rec)) return; // manual: until `down`
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
    if (now) rec = now;
    const step = watchStep({
      recordGone: now === null, exited, owner, hasTarget: target !== null, orphaned,
      ownerHolds: () => owner !== null && target !== null && holds(owner.pid, target),
      nextHolder: () => {
        for (const pid of target ? holdersOf(target, [process.pid], netns) : []) {
          if (pid === owner?.pid) continue;
          try { return ownerOf(pid); } catch { /* it just exited */ }
        }
        return null;
      },
    });
    if (step.kind === 'stop') return; // `down` (or a request that reaped it) released it meanwhile
    if (step.kind === 'release') break;
    if (step.kind === 'wait') { orphaned = step.orphaned; continue; }
    rec.owner = step.owner;
    saveEndpoint(host.stateDir, rec);
    owner = step.owner;
    ownerExit = waitForExit(owner).then(() => true);
    orphaned = 0;
  }
  const last = loadEndpoint(host.stateDir, id);
  if (last) releaseEndpoint(last, host);
}
