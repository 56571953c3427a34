// `probe`: what this host offers, per kernel implementation and transport,
// with the reason when something is not available.
import { kernels, transports } from '../backends/registry.js';
import type { EndpointRequest, HostContext } from '../backends/types.js';

export interface ProbeRow { kind: 'kernel' | 'transport'; name: string; available: boolean; reason: string }

export function probeHost(host: HostContext, req: Partial<EndpointRequest> = {}): ProbeRow[] {
  const rows: ProbeRow[] = [];
  for (const k of kernels.values()) {
    let r;
    try {
      r = k.probe({ params: {}, ...req }, host);
    } catch (e) {
      r = { available: false, reason: `probe failed: ${(e as Error).message}` };
    }
    rows.push({ kind: 'kernel', name: k.name, ...r });
  }
  for (const t of transports.values()) rows.push({ kind: 'transport', name: t.name, ...t.probe(host) });
  return rows;
}
