// CNI attachments as the helper's own endpoint records (src/state/endpoints.ts):
// one record per (network, container, ifname), so `list`, `down` and `gc` see
// them, and the CNI GC finds them by network name.
import { createHash } from 'node:crypto';
import { listEndpoints, loadEndpoint, type EndpointRecord } from '../state/endpoints.js';

export interface CniInfo {
  network: string;
  containerId: string;
  ifname: string;
  netns: string;
  transport: string;
  /** The config as given (prevResult dropped): IPAM DEL from GC needs it. */
  conf: Record<string, unknown>;
  result?: Record<string, unknown>;
}

/** Endpoint id of an attachment: stable, so DEL and CHECK find what ADD made. */
export function attachmentId(network: string, containerId: string, ifname: string): string {
  return `cni-${createHash('sha256').update(`${network}\0${containerId}\0${ifname}`).digest('hex').slice(0, 24)}`;
}

export function cniInfo(rec: EndpointRecord): CniInfo | null {
  const c = rec.info.cni as CniInfo | undefined;
  return c && typeof c === 'object' && typeof c.network === 'string' && typeof c.containerId === 'string' && typeof c.ifname === 'string' ? c : null;
}

export function loadAttachment(stateDir: string, network: string, containerId: string, ifname: string): EndpointRecord | null {
  return loadEndpoint(stateDir, attachmentId(network, containerId, ifname));
}

/** Every attachment record of one network. */
export function attachmentsOf(stateDir: string, network: string): EndpointRecord[] {
  const out: EndpointRecord[] = [];
  for (const e of listEndpoints(stateDir)) {
    if ('corrupt' in e) continue;
    const c = cniInfo(e.record);
    if (c?.network === network) out.push(e.record);
  }
  return out;
}
