// Tearing an endpoint down from its record: `down`, the watcher, the broker
// and `gc` all come here. Every release step is idempotent (already gone =
// success) and checks the object is still the one we made, so running it
// twice, after a crash half-way, or on a forged record, is safe.
import type { Caller } from '../access/caller.js';
import { AccessDeniedError, NotFoundError, UsageError } from '../errors.js';
import { visibleTo } from './list.js';
import { MARKER_PREFIX } from '../backends/kernel/klink.js';
import { kernels } from '../backends/registry.js';
import type { HostContext } from '../host/context.js';
import { loadEndpoint, noteReleased, releasedTombstone, removeEndpoint, validEndpointId, type EndpointRecord } from '../state/endpoints.js';
import { checkStateDir } from '../state/state-dir.js';
import { describeNetns, locateNetns } from '../net/netns.js';
import { releaseInNetns } from './release-netns.js';

export interface ReleaseReport {
  id: string;
  released: string[];
  /** Objects left alone because they are not (or no longer) ours: the record named something else. */
  skipped: string[];
  failed: string[];
}

function describeOwned(kind: string, data: Record<string, unknown>): string {
  const name = data.ifname ?? data.pci ?? data.bridge ?? data.dst ?? '';
  return `${kind}${name ? ` ${String(name)}` : ''}`;
}

/**
 * Objects of an endpoint carry the marker of that endpoint (klink.ts): one
 * naming another endpoint's marker belongs to that endpoint, whatever this
 * record says, and is not this record's to release.
 */
function foreignMarker(rec: EndpointRecord, data: Record<string, unknown>): string | null {
  const m = data.marker;
  if (m === undefined || m === `${MARKER_PREFIX}${rec.id}`) return null;
  return `left alone: it carries marker ${JSON.stringify(m)}, not endpoint ${rec.id}'s`;
}

/**
 * Releases an endpoint where its objects are: in this network namespace
 * directly, in another one through `down` run there (nsenter), never
 * pretending: a namespace that is gone is a failure the record keeps.
 */
export function releaseEndpoint(rec: EndpointRecord, host: HostContext): ReleaseReport {
  // The records are only as trustworthy as the directory they are in.
  checkStateDir(host.stateDir);
  if (rec.netns) {
    const where = locateNetns(rec.netns);
    if (where.kind === 'gone') return { id: rec.id, released: [], skipped: [], failed: [netnsGoneLine(rec)] };
    if (where.kind === 'there') return releaseInNetns(rec, host, where.path);
  }
  return releaseHere(rec, host);
}

/** The one line for an endpoint whose namespace no longer exists. */
export function netnsGoneLine(rec: EndpointRecord): string {
  return `endpoint ${rec.id} was made in network namespace ${describeNetns(rec.netns!)}, which no longer exists (its virtual links went with it); 'qemu-net-helper down --forget ${rec.id}' drops the record`;
}

function releaseHere(rec: EndpointRecord, host: HostContext): ReleaseReport {
  const released: string[] = [];
  const skipped: string[] = [];
  const failed: string[] = [];
  for (const { backend, obj } of [...rec.owned].reverse()) {
    const what = `${backend}: ${describeOwned(obj.kind, obj.data)}`;
    const impl = kernels.get(backend);
    if (!impl) {
      failed.push(`${what}: no kernel implementation '${backend}' in this build`);
      continue;
    }
    const foreign = foreignMarker(rec, obj.data);
    if (foreign) {
      skipped.push(`${what}: ${foreign}`);
      continue;
    }
    try {
      const note = impl.release(obj, host);
      if (typeof note === 'string') skipped.push(`${what}: ${note}`);
      else released.push(what);
    } catch (e) {
      failed.push(`${what}: ${(e as Error).message}`);
    }
  }
  // A record stays while anything could not be released, so gc can retry.
  // Skipped objects do not keep it: what is not ours never becomes ours.
  if (failed.length === 0) {
    removeEndpoint(host.stateDir, rec.id);
    noteReleased(host.stateDir, rec);
  }
  return { id: rec.id, released, skipped, failed };
}

export interface DownReport extends ReleaseReport { alreadyGone: boolean; forgotten?: boolean }

/**
 * `down ID` for a caller: only the caller's own endpoints (root: any).
 * Idempotent for an endpoint released before (its tombstone says so); an id
 * that never had a record (a typo) is not found (exit 5), not a success.
 */
export function takeDown(id: string, host: HostContext, caller: Caller): DownReport {
  if (!validEndpointId(id)) throw new UsageError(`endpoint id '${id}' is not valid`, "ids are letters, digits, . _ - (see 'qemu-net-helper list')");
  const rec = loadEndpoint(host.stateDir, id);
  if (!rec) {
    const t = releasedTombstone(host.stateDir, id);
    if (t && (caller.isRoot || t.uid === caller.uid)) return { id, released: [], skipped: [], failed: [], alreadyGone: true };
    throw new NotFoundError(`no endpoint ${id}`, "see 'qemu-net-helper list' for the ids (endpoints released over a week ago or before a reboot are forgotten)");
  }
  if (!visibleTo(caller, rec)) throw new AccessDeniedError(`access denied: endpoint ${id} belongs to another user`, 'a user can take down only the endpoints it made');
  if (rec.netns && locateNetns(rec.netns).kind === 'gone') throw new NotFoundError(netnsGoneLine(rec));
  return { ...releaseEndpoint(rec, host), alreadyGone: false };
}

/** `down --forget ID` (root): drops a record without releasing anything, for an endpoint whose namespace is gone. */
export function forgetEndpoint(id: string, host: HostContext, caller: Caller): DownReport {
  if (!caller.isRoot) throw new AccessDeniedError('access denied: --forget is only for root', 'an endpoint of yours is released with down ID');
  if (!validEndpointId(id)) throw new UsageError(`endpoint id '${id}' is not valid`, "ids are letters, digits, . _ - (see 'qemu-net-helper list')");
  checkStateDir(host.stateDir);
  const rec = loadEndpoint(host.stateDir, id);
  if (!rec) throw new NotFoundError(`no endpoint ${id}`, "see 'qemu-net-helper list' for the ids");
  removeEndpoint(host.stateDir, id);
  noteReleased(host.stateDir, rec);
  return { id, released: [], skipped: rec.owned.map((o) => `${o.backend}: ${describeOwned(o.obj.kind, o.obj.data)}: forgotten, not released`), failed: [], alreadyGone: false, forgotten: true };
}
