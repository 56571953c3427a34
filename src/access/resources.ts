// Every resource a request names, for the ACL: the profile (by its own name),
// then what the merged request (flags over profile) would touch — the bridge,
// the mode, the uplink, each VF pool entry, the NAT subnet and a routed
// guest's address. Checking the merged request is what makes a profile unable
// to smuggle in a bridge or subnet its caller could not name directly.
import type { EndpointRequest } from '../backends/types.js';
import type { ParsedMode } from '../policy/mode.js';
import type { Resource } from './acl.js';
import type { Caller } from './caller.js';

export function resourcesOf(mode: ParsedMode, req: EndpointRequest, profileName: string | null, caller: Caller): Resource[] {
  const out: Resource[] = [];
  if (profileName) out.push({ kind: 'profile', name: profileName });
  if (mode.kind === 'bridge') {
    out.push({ kind: 'bridge', name: req.dev ?? 'br0' });
  } else {
    out.push({ kind: 'mode', name: mode.name });
    if (req.dev) out.push({ kind: 'dev', name: req.dev });
    else if (mode.kind === 'nat') out.push({ kind: 'bridge', name: mode.defaultBridge });
  }
  for (const vf of req.vfPool ?? []) out.push({ kind: 'vf', name: vf });
  if (mode.kind === 'nat') out.push({ kind: 'subnet', name: req.subnet ?? mode.defaultSubnet });
  if (req.guestIp) out.push({ kind: 'subnet', name: `${req.guestIp}/32` });
  // Root could make all of this by hand: its requests answer only to the
  // interface rules qemu-bridge-helper's ACL always had.
  return caller.isRoot ? out.filter((r) => r.kind === 'bridge' || r.kind === 'dev') : out;
}
