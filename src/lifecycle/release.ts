// Tearing an endpoint down from its record: `down`, the watcher, the broker
// and `gc` all come here. Every release step is idempotent (already gone =
// success) and checks the object is still the one we made, so running it
// twice, after a crash half-way, or on a forged record, is safe.
import { kernels } from '../backends/registry.js';
import type { HostContext } from '../host/context.js';
import { removeEndpoint, type EndpointRecord } from '../state/endpoints.js';

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
