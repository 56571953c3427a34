// Tearing endpoints down from their records: `down`, the watcher and `gc`
// all come here. Every release step is idempotent (already gone = success), so
// running it twice, or after a crash half-way, is safe.
import { kernels } from '../backends/registry.js';
import type { HostContext } from '../backends/types.js';
import { ownerStatus, type OwnerRef } from '../state/owner.js';
import { endpointOwnerStatus, listEndpoints, removeEndpoint, type EndpointRecord } from '../state/endpoints.js';

export interface ReleaseReport {
  id: string;
  released: string[];
  failed: string[];
}

export function describeOwned(kind: string, data: Record<string, unknown>): string {
  const name = data.ifname ?? data.pci ?? data.bridge ?? data.dst ?? '';
  return `${kind}${name ? ` ${String(name)}` : ''}`;
}

export function releaseEndpoint(rec: EndpointRecord, host: HostContext): ReleaseReport {
  const released: string[] = [];
  const failed: string[] = [];
  for (const { backend, obj } of [...rec.owned].reverse()) {
    const what = `${backend}: ${describeOwned(obj.kind, obj.data)}`;
    const impl = kernels.get(backend);
    if (!impl) {
      failed.push(`${what}: no kernel implementation '${backend}' in this build`);
      continue;
    }
    try {
      impl.release(obj, host);
      released.push(what);
    } catch (e) {
      failed.push(`${what}: ${(e as Error).message}`);
    }
  }
  // A record stays while anything could not be released, so gc can retry.
  if (failed.length === 0) removeEndpoint(host.stateDir, rec.id);
  return { id: rec.id, released, failed };
}

export interface GcReport {
  released: ReleaseReport[];
  kept: { id: string; why: string }[];
  corrupt: { file: string; why: string }[];
}

/** Releases every endpoint whose owner is gone. Endpoints with a live or unknown owner stay. */
export function gcEndpoints(host: HostContext): GcReport {
  const report: GcReport = { released: [], kept: [], corrupt: [] };
  for (const e of listEndpoints(host.stateDir)) {
    if ('corrupt' in e) {
      report.corrupt.push({ file: e.file, why: e.corrupt });
      continue;
    }
    const st = endpointOwnerStatus(e.record);
    // A setup whose process died before it finished: nobody will ever use it.
    const setupBy = e.record.info.setupBy as OwnerRef | undefined;
    const abandoned = e.record.info.state === 'setting-up' && setupBy !== undefined && ownerStatus(setupBy) === 'gone';
    if (st === 'gone' || abandoned) report.released.push(releaseEndpoint(e.record, host));
    else report.kept.push({ id: e.record.id, why: e.record.owner ? `owner pid ${e.record.owner.pid} is ${st}` : 'manual endpoint (use down)' });
  }
  return report;
}
