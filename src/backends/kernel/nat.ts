// Kernel implementation "nat": a private network behind the host, like
// libvirt's default network, made of
//   - a bridge of its own (params.bridge, else req.dev, else qnhnat0) holding
//     the subnet's first address (req.subnet / params.subnet, else the first
//     10.213.X.0/24 that overlaps nothing in this namespace);
//   - an nftables table of its own, `table ip qemu_net_helper_<bridge>`:
//     masquerade for the subnet leaving through anything but the bridge, and
//     forward rules (out and replies in accepted; unsolicited inbound and
//     spoofed sources rejected, as libvirt does);
//   - net.ipv4.ip_forward=1 (needed for any uplink; set, never put back: other
//     software on a host with NAT networks relies on it, as with libvirt);
//   - a dnsmasq daemon serving DHCP (no DNS) on the bridge, with its pid,
//     lease and log files in <stateDir>/nat/<bridge>/;
// and, per guest, a tap on that bridge (the bridge+tap kernel's setupBridgeTap),
// which dies with QEMU's fd.
//
// Sharing: the network belongs to all guests on it. The first setup creates
// it, later ones reuse it. The rule for removing it is kernel truth, not a
// counter: releasing a guest's 'nat-network' object removes the network when
// the bridge has no port left. Taps vanish when their QEMU exits (persistent
// ones from `up` are owned objects released first), so a guest that crashed
// without a release does not keep the network alive forever, and no counter
// can drift. Any other port (a veth a user plugged in, a guest whose QEMU
// still runs) counts as a user: we never pull a network from under someone.
// Setup and release run under one flock (<stateDir>/nat/lock), so "is anyone
// left?" and "I am joining" never interleave. A guest's fixed address
// (req.guestIp + req.mac) is an owned object of its own ('nat-reservation').
// The lease file is kept when the network goes, so guests get their old
// addresses back when it is re-created. The network itself (create, heal,
// join, leave, reservations) is nat-network.ts; this file is the kernel
// implementation (a tap on it), release and probe.
import { existsSync } from 'node:fs';
import { SetupError, UsageError } from '../../errors.js';
import { checkInterfaceName } from '../../net/ifname.js';
import { linkShow } from '../../net/ip.js';
import { ipToNumber, parseSubnet } from '../../net/ipv4.js';
import { checkGuestMac, formatMac } from '../../net/mac.js';
import type { Rollback } from '../../state/rollback.js';
import type { Availability, EndpointRequest, HostContext, KernelBackend, KernelEndpoint, OwnedObject } from '../types.js';
import { setupBridgeTap } from './bridge-tap.js';
import { dataString, stringParam } from './kerrors.js';
import { KIND_LINK, linkMarker, markLink, releaseLink } from './klink.js';
import { FEATURES, kernelHas, type FeatureAnswer } from './kprobe.js';
import { MAX_NAT_PREFIX, MIN_NAT_PREFIX, natBridgeName, checkNatBridgeName, dhcpRange } from './nat-plan.js';
import {
  dropReservation, joinNetwork, KIND_NAT, KIND_RESERVATION, leaveNetwork, natDir, natOptions, recordPath, reserveAddress,
} from './nat-network.js';

// Re-exported: callers and tests know these as the NAT kernel's.
export { DEFAULT_NAT_BRIDGE, AUTO_NAT_RANGE, natBridgeName, natTableName, natRuleset, pickDefaultSubnet, dhcpRange } from './nat-plan.js';

function setupNat(req: EndpointRequest, host: HostContext, rb: Rollback): KernelEndpoint {
  const o = natOptions(req, host);
  const tapName = stringParam(req.params, 'ifname');
  if (tapName !== undefined) checkInterfaceName(tapName, 'tap');
  const mac = req.mac ? checkGuestMac(req.mac) : undefined;
  if (req.guestIp !== undefined) {
    ipToNumber(req.guestIp);
    if (!mac) throw new UsageError(`a fixed guest address (${req.guestIp}) needs the guest's MAC`, 'pass --mac too, the one the guest NIC uses');
  }
  return joinNetwork(host, o, rb, (j) => {
    if (req.guestIp !== undefined) reserveAddress(host, j, rb, formatMac(mac!), req.guestIp);

    // A persistent tap (`up`) is journaled by setupBridgeTap as {kind: 'link'} for this kernel.
    const persist = req.persist ? { persist: { backend: 'nat', marker: linkMarker(req.params, 'nat'), mark: markLink, release: (x: OwnedObject) => releaseLink(x, ['tun']) } } : {};
    const ep = setupBridgeTap({ bridge: j.bridge, vnetHdr: req.vnetHdr, tunDevice: host.tunDevice, ...(tapName ? { tapName } : {}), ...persist }, rb);
    if (ep.owned) j.owned.push(ep.owned);

    return {
      kernel: 'nat',
      ifname: ep.tap.name,
      fds: [ep.tap.fd],
      vnetHdr: ep.tap.vnetHdr,
      ...(mac ? { mac: formatMac(mac) } : {}),
      mtu: ep.mtu,
      owned: j.owned,
      info: {
        bridge: j.bridge,
        subnet: j.rec.subnet,
        gateway: j.rec.gateway,
        dhcpRange: dhcpRange(j.net),
        networkCreated: j.created,
        stateDir: j.dir,
        ...(req.guestIp ? { guestIp: req.guestIp } : {}),
      },
    };
  });
}

/** The bridge an owned object names, or why it names nothing of ours (a path or table name could hide in it). */
function recordedBridge(obj: OwnedObject): string | { note: string } {
  const bridge = dataString(obj.data, 'bridge', obj.kind);
  try {
    return checkNatBridgeName(bridge);
  } catch (e) {
    return { note: `left alone: ${(e as Error).message}` };
  }
}

function releaseNat(obj: OwnedObject, host: HostContext): string | undefined {
  switch (obj.kind) {
    case KIND_NAT: {
      const bridge = recordedBridge(obj);
      return typeof bridge === 'string' ? leaveNetwork(host, bridge) : bridge.note;
    }
    case KIND_RESERVATION: {
      const bridge = recordedBridge(obj);
      if (typeof bridge !== 'string') return bridge.note;
      const mac = dataString(obj.data, 'mac', obj.kind);
      if (!/^[0-9a-f]{2}(:[0-9a-f]{2}){5}$/.test(mac)) return `left alone: ${JSON.stringify(mac)} is not a MAC we reserve under`;
      dropReservation(host, bridge, mac);
      return undefined;
    }
    case KIND_LINK:
      return releaseLink(obj, ['tun']);
    default:
      throw new SetupError(`the nat kernel cannot release objects of kind '${obj.kind}'`);
  }
}

function probeNat(req: Partial<EndpointRequest>, host: HostContext): Availability {
  if (!host.netAdmin) return { available: false, reason: 'a NAT network needs CAP_NET_ADMIN' };
  const missing: string[] = [];
  const checks: [string, FeatureAnswer][] = [
    ['bridge', kernelHas(FEATURES.bridge)],
    ['tun', kernelHas(FEATURES.tun)],
    ['nf_tables', kernelHas(FEATURES.nfTables)],
    ['nft masquerade', kernelHas(FEATURES.nftMasq)],
  ];
  for (const [what, a] of checks) if (a.present === false) missing.push(`${what} (${a.how})`);
  if (missing.length) return { available: false, reason: `the kernel lacks ${missing.join(', ')}` };
  if (!existsSync(host.tunDevice)) return { available: false, reason: `${host.tunDevice} does not exist` };
  if (!host.bin.nft) return { available: false, reason: "the 'nft' command is not installed (package nftables)" };
  if (!host.bin.dnsmasq) return { available: false, reason: "the 'dnsmasq' command is not installed (package dnsmasq-base)" };
  try {
    const bridge = natBridgeName({ dev: req.dev, params: req.params ?? {} } as Pick<EndpointRequest, 'dev' | 'params'>);
    const subnetText = req.subnet ?? (typeof req.params?.subnet === 'string' ? req.params.subnet : undefined);
    if (subnetText !== undefined) parseSubnet(subnetText, { minPrefix: MIN_NAT_PREFIX, maxPrefix: MAX_NAT_PREFIX });
    const l = linkShow(bridge);
    const ours = existsSync(recordPath(natDir(host, bridge)));
    if (l && !ours) return { available: false, reason: `'${bridge}' exists and is not a NAT network made by qemu-net-helper` };
    return { available: true, reason: l ? `NAT network '${bridge}' exists and is reused` : `NAT network '${bridge}' will be created` };
  } catch (e) {
    return { available: false, reason: e instanceof Error ? e.message : String(e) };
  }
}

export const natBackend: KernelBackend = {
  name: 'nat',
  yields: 'tap',
  probe: probeNat,
  setup: setupNat,
  release: releaseNat,
};
