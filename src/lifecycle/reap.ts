// Reap before refusing: when QEMU exits, its macvtap (VF claim, MAC, switch
// port...) stays until the watcher releases it, a few hundred ms later. A
// request meeting such an endpoint (same device, interface name, MAC or VF;
// a switch port of the same user, which counts against that user's bound)
// releases it first, through the release path `down`, the watcher and gc
// use, with the same identity checks; an endpoint whose owner lives, or
// cannot be seen, is never touched, and the request is then refused as before.
import type { EndpointRequest, HostContext } from '../backends/types.js';
import { KIND_PORT } from '../backends/kernel/vswitch.js';
import { formatMac, parseMac } from '../net/mac.js';
import { endpointDir, listEndpoints, type EndpointRecord } from '../state/endpoints.js';
import { ownerStatus } from '../state/owner.js';
import { existsSync, readdirSync } from 'node:fs';
import { fdHeldByOthers, ownNetns } from './holders.js';
import { reapableBecause } from './liveness.js';
import { releaseEndpoint, type ReleaseReport } from './release.js';

/** What a new request would take: each field, when given, must not be another endpoint's. */
export interface Wanted {
  /** The parent, bridge, uplink or PF device (--dev). */
  dev?: string;
  /** An interface name the request asks for by name. */
  ifname?: string;
  /** The guest MAC, as formatMac writes it. */
  mac?: string;
  /** VF pool entries: PF names or VF PCI addresses. */
  vfs?: readonly string[];
  /** The caller's uid: the vhost-user switch refuses a port to a user at --max-ports-per-user. */
  portsOfUid?: number;
}

/** From a request (or a CNI config: MAC as text, no params), for the caller `uid` when known. */
export function wantedBy(req: { dev?: string | undefined; mac?: Buffer | string | undefined; params?: EndpointRequest['params']; vfPool?: readonly string[] | undefined }, uid?: number): Wanted {
  const w: Wanted = {};
  if (uid !== undefined) w.portsOfUid = uid;
  if (req.dev) w.dev = req.dev;
  if (typeof req.params?.ifname === 'string') w.ifname = req.params.ifname;
  const mac = typeof req.mac === 'string' ? parseMac(req.mac) : req.mac;
  if (mac) w.mac = formatMac(mac);
  if (req.vfPool?.length) w.vfs = req.vfPool;
  return w;
}

const str = (v: unknown): string | undefined => (typeof v === 'string' && v !== '' ? v : undefined);

/** Interface names an endpoint made or stands on (its links, their parents, its PF). */
function devicesOf(rec: EndpointRecord): Set<string> {
  const out = new Set<string>();
  const add = (v: unknown): void => { const s = str(v); if (s !== undefined) out.add(s); };
  add(rec.ifname);
  add(rec.info.parent);
  add(rec.info.pf);
  for (const o of rec.owned) {
    add(o.obj.data.ifname);
    add(o.obj.data.parent);
    add(o.obj.data.pf);
  }
  return out;
}

/**
 * Why endpoint `rec` stands in the way of a request for `w`, or null.
 * Interface names repeat across network namespaces: a record of another
 * namespace (`here` is ours, as /proc names it) never clashes by name. MACs
 * (checkMacFree) and VFs (PCI addresses) are host-wide.
 */
export function conflictOf(rec: EndpointRecord, w: Wanted, here: string | undefined): string | null {
  const theirs = str(rec.info.netns);
  if (here === undefined || theirs === undefined || theirs === here) {
    const devices = devicesOf(rec);
    if (w.dev !== undefined && devices.has(w.dev)) return `it uses device '${w.dev}'`;
    if (w.ifname !== undefined && devices.has(w.ifname)) return `it has interface '${w.ifname}'`;
  }
  if (w.mac !== undefined && rec.mac === w.mac) return `it has MAC ${w.mac}`;
  if (w.vfs?.length) {
    for (const o of rec.owned) {
      const vf = [str(o.obj.data.pci), str(o.obj.data.pf)].find((v) => v !== undefined && w.vfs!.includes(v));
      if (vf !== undefined) return `it holds VF ${str(o.obj.data.pci) ?? vf}`;
    }
  }
  if (w.portsOfUid !== undefined && (rec.uid ?? 0) === w.portsOfUid && rec.owned.some((o) => o.obj.kind === KIND_PORT)) {
    return `it is a vhost-user switch port of uid ${w.portsOfUid} (the switch bounds ports per user)`;
  }
  return null;
}

/** reapableBecause on this host's processes; the fd holders are looked up (a /proc scan) only once the owner is gone. */
export function reapableNow(rec: EndpointRecord): string | null {
  return reapableBecause(rec, { ownerStatus, fdHeld: () => fdHeldByOthers(rec) });
}

export interface Reaped { id: string; why: string; report: ReleaseReport }

/**
 * Releases every endpoint that conflicts with `w` and whose owner is gone.
 * Cheap when nothing conflicts: one readdir, one parse per record, and no
 * /proc lookup for records that do not conflict. A release that fails is
 * left for gc; the request then meets the endpoint and is refused as before.
 */
export function reapConflicting(w: Wanted, host: HostContext): Reaped[] {
  if (w.dev === undefined && w.ifname === undefined && w.mac === undefined && !w.vfs?.length && w.portsOfUid === undefined) return [];
  const dir = endpointDir(host.stateDir);
  if (!existsSync(dir) || !readdirSync(dir).some((n) => n.endsWith('.json'))) return [];
  const here = ownNetns();
  const out: Reaped[] = [];
  for (const e of listEndpoints(host.stateDir)) {
    if (!('record' in e)) continue;
    const rec = e.record;
    const conflict = conflictOf(rec, w, here);
    if (conflict === null) continue;
    const dead = reapableNow(rec);
    if (dead === null) continue;
    out.push({ id: rec.id, why: `${conflict} and ${dead}`, report: releaseEndpoint(rec, host) });
  }
  return out;
}
