// `list`: endpoints and VF claims with their owners' state, as one caller may
// see them (its own; root sees all, unreadable records included).
import type { Caller } from '../access/caller.js';
import { endpointOwnerStatus, listEndpoints, type EndpointRecord } from '../state/endpoints.js';
import { listClaims, type ClaimEntry } from '../state/vf-claims.js';
import { locateNetns } from '../net/netns.js';

/** netnsStatus: 'here' (the lister's namespace), 'other' (another that still exists), 'gone'; absent for records without a namespace. */
export type ListedEndpoint = (EndpointRecord & { ownerStatus: string; netnsStatus?: 'here' | 'other' | 'gone' }) | { id: string; corrupt: string; file: string };
export interface Listing { endpoints: ListedEndpoint[]; vfClaims: ClaimEntry[] }

/** Records a caller may see: its own; root sees all (records from before uids were kept are root's). */
export function visibleTo(caller: Caller, rec: EndpointRecord): boolean {
  return caller.isRoot || (rec.uid ?? 0) === caller.uid;
}

export function listFor(stateDir: string, caller: Caller): Listing {
  const endpoints: ListedEndpoint[] = [];
  for (const e of listEndpoints(stateDir)) {
    if ('record' in e) {
      if (!visibleTo(caller, e.record)) continue;
      const ns = e.record.netns ? locateNetns(e.record.netns).kind : undefined;
      endpoints.push({ ...e.record, ownerStatus: endpointOwnerStatus(e.record), ...(ns ? { netnsStatus: ns === 'there' ? 'other' : ns } : {}) });
    } else if (caller.isRoot) endpoints.push({ id: e.id, corrupt: e.corrupt, file: e.file });
  }
  const mine = new Set(endpoints.map((e) => e.id));
  const vfClaims = listClaims(stateDir).filter((c) => caller.isRoot || (c.record !== undefined && mine.has(c.record.endpointId)));
  return { endpoints, vfClaims };
}
