// gc and the watcher's main: both end in releaseEndpoint.
import type { HostContext } from '../backends/types.js';
import { gcStaleVfClaims } from '../backends/kernel/sriov.js';
import { loadEndpoint } from '../state/endpoints.js';
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

export async function watchEndpoint(id: string, env: NodeJS.ProcessEnv = process.env): Promise<void> {
  const host = hostFromEnv(env);
  const rec = loadEndpoint(host.stateDir, id);
  if (!rec?.owner) return;
  await waitForExit(rec.owner);
  // Re-read: `down` may have released it meanwhile.
  const now = loadEndpoint(host.stateDir, id);
  if (now) releaseEndpoint(now, host);
}
