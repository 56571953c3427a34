// gc and the watcher's main: both end in releaseEndpoint.
import type { HostContext } from '../backends/types.js';
import { gcStaleVfClaims } from '../backends/kernel/sriov.js';
import { loadEndpoint, saveEndpoint } from '../state/endpoints.js';
import { ownerOf, type OwnerRef } from '../state/owner.js';
import { fdTargetOf, holdersOf, holds } from './holders.js';
import { gcEndpoints, releaseEndpoint, type GcReport } from './release.js';
import { hostFromEnv } from './up.js';
import { waitForExit } from './watcher.js';

export interface GcAllReport {
  endpoints: GcReport;
  vfClaims: { pci: string; action: string }[];
}

export function gcAll(host: HostContext): GcAllReport {
  const endpoints = gcEndpoints(host);
  // After endpoints: their release already returned their VFs; what is left is stale claims of owners that left no record.
  const vfClaims = gcStaleVfClaims(host).map((r) => ({ pci: r.pci, action: r.result }));
  return { endpoints, vfClaims };
}

/**
 * The watcher's main: wait for the owner to exit, then release. The owner is
 * whoever holds the endpoint's fd: if the socketpair peer (libvirtd) hands it
 * on to QEMU, the watcher adopts QEMU as owner (records it) once the peer
 * itself no longer holds the fd; when the owner exits and nobody else holds
 * it, the endpoint goes.
 */
export async function watchEndpoint(id: string, env: NodeJS.ProcessEnv = process.env, pollMs = 1000): Promise<void> {
  const host = hostFromEnv(env);
  let rec = loadEndpoint(host.stateDir, id);
  if (!rec?.owner) return;
  const target = fdTargetOf(rec);
  let orphaned = 0;
  let owner: OwnerRef = rec.owner;
  // One exit waiter per owner (a pidfd in the event loop), reused across polls.
  let ownerExit = waitForExit(owner).then(() => true);
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
    if (!exited && holds(owner.pid, target)) {
      orphaned = 0;
      continue;
    }
    const next = holdersOf(target, [process.pid]).find((pid) => pid !== owner.pid);
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
    if (exited || ++orphaned >= 2) break;
  }
  const last = loadEndpoint(host.stateDir, id);
  if (last) releaseEndpoint(last, host);
}
