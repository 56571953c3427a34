// 802.1Q VLANs for the `vlan` of a profile. macvtap modes: the macvtap sits on
// a VLAN link of --dev (PARENT.VID, made when missing and shared by every guest
// of that VLAN; removed by the last one). bridge mode: the tap becomes an
// untagged port of that VLAN (PVID) on a VLAN-filtering bridge, and goes with
// the tap, so nothing outlives it.
import { execFileSync } from 'node:child_process';
import { ConfigError, NotFoundError, UsageError } from '../../errors.js';
import { ip, ipJson, linkKind, linkShow, type LinkInfo } from '../../net/ip.js';
import type { Rollback } from '../../state/rollback.js';
import { ifIndex } from '../../sys/netdev.js';
import type { OwnedObject } from '../types.js';
import { markNewLink, releaseLink } from './klink.js';
import { dataNumber, dataString, kernelFailure } from './kerrors.js';

export const KIND_VLAN = 'vlan-link';

export function checkVlanId(vid: number): number {
  if (!Number.isInteger(vid) || vid < 1 || vid > 4094) throw new UsageError(`VLAN ${vid} is not an id from 1 to 4094`, 'set "vlan" in the profile to 1..4094');
  return vid;
}

/** PARENT.VID when it fits IFNAMSIZ, else vVID.PARENTINDEX (unique per parent). */
export function vlanLinkName(parent: string, parentIndex: number, vid: number): string {
  const plain = `${parent}.${vid}`;
  return plain.length <= 15 ? plain : `v${vid}.${parentIndex}`;
}

type Lower = LinkInfo & { link?: string };

function vlanOf(l: Lower): { parent?: string; id?: number } {
  return { ...(l.link ? { parent: l.link } : {}), ...(typeof l.linkinfo?.info_data?.id === 'number' ? { id: l.linkinfo.info_data.id } : {}) };
}

/**
 * The VLAN link for (parent, vid): an existing one is used as it is, a new one
 * is made, brought up and journaled (backend `backend`) for removal.
 */
export function ensureVlanLink(parent: string, vid: number, backend: string, marker: string, rb: Rollback): { ifname: string; owned?: OwnedObject } {
  checkVlanId(vid);
  const pIndex = ifIndex(parent);
  if (pIndex === 0) throw new NotFoundError(`parent device '${parent}' does not exist in this network namespace`, 'pass an existing uplink with --dev');
  const name = vlanLinkName(parent, pIndex, vid);
  const have = linkShow(name) as Lower | null;
  if (have) {
    const v = vlanOf(have);
    if (linkKind(have) !== 'vlan' || v.parent !== parent || v.id !== vid) {
      throw new ConfigError(`'${name}' exists but is not VLAN ${vid} on '${parent}' (it is a ${linkKind(have)})`, 'rename or remove it');
    }
    return { ifname: name };
  }
  try {
    ip('link', 'add', 'link', parent, 'name', name, 'type', 'vlan', 'id', String(vid));
  } catch (e) {
    kernelFailure(e, `creating VLAN ${vid} on '${parent}' (the 8021q module must be available)`);
  }
  // Marked like every link we make (klink.ts): release deletes only a link that is still ours.
  markNewLink(name, marker);
  const owned: OwnedObject = { kind: KIND_VLAN, data: { ifname: name, ifindex: ifIndex(name), marker, parent, vid } };
  rb.add(`delete VLAN link ${name}`, () => releaseVlanLink(owned), { backend, obj: owned });
  try {
    ip('link', 'set', 'dev', name, 'up');
  } catch (e) {
    kernelFailure(e, `bringing up VLAN link '${name}'`);
  }
  return { ifname: name, owned };
}

/** Deletes the VLAN link we made, unless macvtaps/macvlans of other guests still sit on it. */
export function releaseVlanLink(obj: OwnedObject): void {
  const name = dataString(obj.data, 'ifname', obj.kind);
  dataNumber(obj.data, 'vid', obj.kind);
  const users = ipJson<Lower>('-d', 'link', 'show').filter((l) => l.link === name && ['macvlan', 'macvtap'].includes(linkKind(l)));
  if (users.length > 0) return;
  releaseLink(obj, ['vlan']);
}

/** bridge mode: makes `port` an untagged member of VLAN `vid` (its PVID) on a VLAN-filtering bridge. */
export function setBridgePortVlan(bridge: string, port: string, vid: number): void {
  checkVlanId(vid);
  const b = linkShow(bridge);
  if (b?.linkinfo?.info_data?.vlan_filtering !== 1) {
    throw new ConfigError(`bridge '${bridge}' does not filter VLANs, so a port cannot be put in VLAN ${vid}`, `turn it on: ip link set ${bridge} type bridge vlan_filtering 1`);
  }
  try {
    execFileSync('bridge', ['vlan', 'add', 'dev', port, 'vid', String(vid), 'pvid', 'untagged'], { stdio: ['ignore', 'ignore', 'pipe'] });
    // The default PVID 1 would still take the guest's untagged frames into VLAN 1 otherwise.
    if (vid !== 1) execFileSync('bridge', ['vlan', 'del', 'dev', port, 'vid', '1'], { stdio: ['ignore', 'ignore', 'pipe'] });
  } catch (e) {
    const why = ((e as { stderr?: Buffer }).stderr?.toString() ?? String(e)).trim();
    throw new ConfigError(`putting '${port}' in VLAN ${vid} on bridge '${bridge}' failed: ${why}`);
  }
}
