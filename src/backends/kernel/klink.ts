// Releasing a link by its owned-object record ({kind: 'link', data: {ifname,
// ifindex?}}), as setupBridgeTap journals persistent taps. Identity first: a
// link of that name whose kind (or ifindex, when recorded) differs is not
// the one we made, and is left alone.
import { linkDelete, linkKind, linkShow, type LinkInfo } from '../../net/ip.js';
import type { OwnedObject } from '../types.js';
import { dataString, kernelFailure } from './kerrors.js';

export const KIND_LINK = 'link';

export function releaseLink(obj: OwnedObject, kinds: readonly string[]): void {
  const name = dataString(obj.data, 'ifname', obj.kind);
  let l: LinkInfo | null;
  try {
    l = linkShow(name);
  } catch (e) {
    kernelFailure(e, `looking up '${name}'`);
  }
  if (!l || !kinds.includes(linkKind(l))) return;
  if (typeof obj.data.ifindex === 'number' && l.ifindex !== obj.data.ifindex) return;
  try {
    linkDelete(name);
  } catch (e) {
    kernelFailure(e, `deleting '${name}'`);
  }
}
