// gc: the safety net when a watcher (or the broker) was killed. Releases every
// endpoint nobody can use any more — its owner exited, its setup died half-way,
// or (owner unknown) nobody holds its fd — then VF claims of vanished owners.
import type { HostContext } from '../host/context.js';
import { gcStaleVfClaims } from '../backends/kernel/sriov.js';
import { endpointDir, endpointOwnerStatus, lifetimeOf, listEndpoints, pruneTombstones, type EndpointRecord } from '../state/endpoints.js';
import { removeStaleTemps } from '../state/atomic-file.js';
import { ownerStatus, procState } from '../state/owner.js';
import { deadBecause as deadBecauseGiven } from './liveness.js';
import { checkStateDir } from '../state/state-dir.js';
import { fdHeldByOthers } from './holders.js';
import { netnsGoneLine, releaseEndpoint, type ReleaseReport } from './release.js';
import { locateNetns } from '../net/netns.js';

export interface GcReport {
  released: ReleaseReport[];
  kept: { id: string; why: string }[];
  corrupt: { file: string; why: string }[];
}

export interface GcAllReport {
  endpoints: GcReport;
  vfClaims: { pci: string; action: string }[];
}

/** Why an endpoint is dead, or null while someone may still use it (the rule: liveness.ts; the facts: /proc). */
export function deadBecause(rec: EndpointRecord): string | null {
  return deadBecauseGiven(rec, { ownerStatus, fdHeld: () => fdHeldByOthers(rec) });
}

/** Releases every dead endpoint (of those `mine` selects). Endpoints with a live or unknown owner stay. */
function gcEndpoints(host: HostContext, mine: (r: EndpointRecord) => boolean = () => true): GcReport {
  // Records in a directory others can write could be anyone's: refuse to act on them.
  checkStateDir(host.stateDir);
  const report: GcReport = { released: [], kept: [], corrupt: [] };
  removeStaleTemps(endpointDir(host.stateDir), (pid) => procState(pid).alive !== false);
  pruneTombstones(host.stateDir);
  for (const e of listEndpoints(host.stateDir)) {
    if ('corrupt' in e) {
      report.corrupt.push({ file: e.file, why: e.corrupt });
      continue;
    }
    if (!mine(e.record)) continue;
    // Not a release, not a success: the record stays and says why.
    if (e.record.netns && locateNetns(e.record.netns).kind === 'gone') { report.kept.push({ id: e.record.id, why: netnsGoneLine(e.record) }); continue; }
    if (deadBecause(e.record) !== null) report.released.push(releaseEndpoint(e.record, host));
    else report.kept.push({ id: e.record.id, why: lifetimeOf(e.record) === 'manual' ? 'manual endpoint (use down)' : `owner ${e.record.owner ? `pid ${e.record.owner.pid}` : '(fd holder)'} is ${endpointOwnerStatus(e.record)}` });
  }
  return report;
}

/** gc for everyone (root), or for one user's endpoints only (a broker client: no VF claim sweep). */
export function gcAll(host: HostContext, mine?: (r: EndpointRecord) => boolean): GcAllReport {
  const endpoints = gcEndpoints(host, mine);
  if (mine) return { endpoints, vfClaims: [] };
  // After endpoints: their release already returned their VFs; what is left is stale claims of owners that left no record.
  const vfClaims = gcStaleVfClaims(host).map((r) => ({ pci: r.pci, action: r.result }));
  return { endpoints, vfClaims };
}
