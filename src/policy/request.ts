// Flags on the command line win over the profile, the profile over defaults.
import type { EndpointRequest } from '../backends/types.js';
import { parseGuestMac } from '../net/mac.js';
import { parseMode, type ParsedMode } from './mode.js';
import type { Profile } from './schema.js';

/** What a caller asks for: the helper's flags, `up`'s options and a broker request all are this. */
export interface RequestFlags {
  mode?: string;
  dev?: string;
  mac?: string;
  mtu?: number;
  queues?: number;
  vfPool?: string[];
  /** Offer a virtio-net header (QEMU's --use-vnet). */
  useVnet: boolean;
  /** --br: QEMU's and libvirt's name for the bridge, and the name of a profile when one exists. */
  bridge: string;
  bridgeGiven?: boolean;
}

export function buildRequest(a: RequestFlags, profile: Profile | null): { mode: ParsedMode; req: EndpointRequest } {
  const mode = parseMode(a.mode ?? profile?.mode ?? 'bridge');
  // In bridge mode the bridge is --dev, else the profile's dev, else --br (QEMU's and libvirt's way to name it).
  const dev = a.dev ?? profile?.dev ?? (mode.kind === 'bridge' && !profile ? a.bridge : undefined);
  const macText = a.mac ?? profile?.mac;
  const req: EndpointRequest = {
    mode: mode.name,
    vnetHdr: a.useVnet,
    queues: a.queues ?? profile?.queues ?? 1,
    params: {},
  };
  if (dev !== undefined) req.dev = dev;
  if (macText !== undefined) req.mac = parseGuestMac(macText);
  const mtu = a.mtu ?? profile?.mtu;
  if (mtu !== undefined) req.mtu = mtu;
  const pool = a.vfPool ?? profile?.vfPool;
  if (pool) req.vfPool = pool;
  if (profile?.vlan !== undefined) req.vlan = profile.vlan;
  if (profile?.spoofchk !== undefined) req.spoofchk = profile.spoofchk;
  if (profile?.subnet !== undefined) req.subnet = profile.subnet;
  if (profile?.guestIp !== undefined) req.guestIp = profile.guestIp;
  return { mode, req };
}
