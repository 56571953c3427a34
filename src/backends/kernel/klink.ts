// Identity of the links we make, and releasing them from an owned-object
// record. A record only names a link; names are reused, and a record may be
// stale or forged. So every link we create is marked with an ifalias of ours
// right after it exists (before it is journaled), its ifindex is recorded,
// and a release deletes a link only when name, kind, ifindex and marker all
// still match. Anything else is left alone and reported, and the release step
// still counts as done: a link that is not ours will never become ours, so
// keeping the record would only make gc retry it forever.
import { ip, linkDelete, linkKind, linkShow, type LinkInfo } from '../../net/ip.js';
import { interfaceNameProblem } from '../../net/ifname.js';
import type { OwnedObject } from '../types.js';
import { kernelFailure } from './kerrors.js';

export const KIND_LINK = 'link';
/** Every marker starts with this; nobody else's link carries it unless root put it there. */
export const MARKER_PREFIX = 'qemu-net-helper:';

// Endpoint ids as state/endpoints.ts makes them (at most 64 characters), so
// a marker stays far below the kernel's 255-byte ifalias limit.
const ID_RE = /^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$/;

/** The marker for links of one endpoint (params.endpointId), else of one kernel implementation. */
export function linkMarker(params: Record<string, unknown>, kernel: string): string {
  const id = params.endpointId;
  return MARKER_PREFIX + (typeof id === 'string' && ID_RE.test(id) ? id : kernel);
}

/** Sets our marker on a link we just created. */
export function markLink(name: string, marker: string): void {
  try {
    ip('link', 'set', 'dev', name, 'alias', marker);
  } catch (e) {
    kernelFailure(e, `marking '${name}' as ours (ifalias)`);
  }
}

/**
 * Marks a link this process created a moment ago and has not journaled yet;
 * if marking fails the link is deleted again (nothing else knows of it yet),
 * so it is never left unmarked and unrecorded.
 */
export function markNewLink(name: string, marker: string): void {
  try {
    markLink(name, marker);
  } catch (e) {
    try { linkDelete(name); } catch { /* report the first failure */ }
    throw e;
  }
}

/** What a record needs for a link identity check; null when the record cannot prove anything. */
export interface LinkIdentity {
  ifname: string;
  ifindex: number;
  marker: string;
}

/** The identity a record claims, or why it claims none (older or forged records). */
export function recordedIdentity(data: Record<string, unknown>): LinkIdentity | string {
  const { ifname, ifindex, marker } = data;
  if (typeof ifname !== 'string' || interfaceNameProblem(ifname) !== null) return `no valid interface name in the record (${JSON.stringify(ifname)})`;
  if (typeof ifindex !== 'number' || !Number.isInteger(ifindex) || ifindex <= 0) return `the record of '${ifname}' has no ifindex, so it cannot be told from someone else's link`;
  if (typeof marker !== 'string' || !marker.startsWith(MARKER_PREFIX)) return `the record of '${ifname}' has no marker of ours, so it cannot be told from someone else's link`;
  return { ifname, ifindex, marker };
}

/** Why the live link `l` is not the one recorded, or null when it is. */
export function identityMismatch(l: LinkInfo, id: LinkIdentity, kinds: readonly string[]): string | null {
  if (!kinds.includes(linkKind(l))) return `'${id.ifname}' is a ${linkKind(l)}, not a ${kinds.join(' or ')}`;
  if (l.ifindex !== id.ifindex) return `'${id.ifname}' has ifindex ${l.ifindex}, the record says ${id.ifindex}`;
  if (l.ifalias !== id.marker) return `'${id.ifname}' does not carry our marker '${id.marker}' (its alias: ${l.ifalias === undefined ? 'none' : JSON.stringify(l.ifalias)})`;
  return null;
}

/** The link when it exists (null: gone); lookup failures are errors, so gc retries. */
export function linkOrNull(name: string): LinkInfo | null {
  try {
    return linkShow(name);
  } catch (e) {
    kernelFailure(e, `looking up '${name}'`);
  }
}

/**
 * Deletes the recorded link if it still is ours. Returns undefined when it
 * was deleted or is gone already, or a note saying why it was left alone.
 * (Between the check and the delete a CAP_NET_ADMIN holder could swap the
 * link; such a holder could delete it anyway, so that race gives nobody more.)
 */
export function releaseLink(obj: OwnedObject, kinds: readonly string[]): string | undefined {
  const id = recordedIdentity(obj.data);
  if (typeof id === 'string') return `left alone: ${id}`;
  const l = linkOrNull(id.ifname);
  if (!l) return undefined;
  const bad = identityMismatch(l, id, kinds);
  if (bad) return `left alone: ${bad}`;
  try {
    linkDelete(id.ifname);
  } catch (e) {
    kernelFailure(e, `deleting '${id.ifname}'`);
  }
  return undefined;
}
