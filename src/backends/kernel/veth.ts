// Kernel implementation "veth": a veth pair. The endpoint's own end (its
// `ifname`) stays in this namespace for the socket transport, which opens an
// AF_PACKET socket on it and moves the guest's frames. The other end, the
// host side, is where the guest shows up on the network:
//   - attached to the bridge `req.dev`, or
//   - moved into the network namespace `params.netns` (optionally renamed
//     to `params.peerIfname`), e.g. a container or a router namespace, or
//   - with neither, left here, up, for the caller to route or bridge.
// Owned: the pair (deleting either end deletes both); no fd is handed out.
import { randomBytes } from 'node:crypto';
import { existsSync } from 'node:fs';
import { ConfigError, NotFoundError, SetupError, UsageError } from '../../errors.js';
import { checkInterfaceName, interfaceNameProblem } from '../../net/ifname.js';
import { ip, IpError, linkKind, linkShow, type LinkInfo } from '../../net/ip.js';
import { checkGuestMac, formatMac } from '../../net/mac.js';
import type { Rollback } from '../../state/rollback.js';
import { getMac, ifIndex, setMac } from '../../sys/netdev.js';
import type { Availability, EndpointRequest, HostContext, KernelBackend, KernelEndpoint, OwnedObject } from '../types.js';
import { linkMarker, markNewLink, releaseLink } from './klink.js';
import { ipReason, kernelFailure, stringParam } from './kerrors.js';
import { FEATURES, kernelHas } from './kprobe.js';

export const OWNED_KIND = 'veth';
/** Where `ip netns` keeps named namespaces (iproute2's NETNS_RUN_DIR). */
const NETNS_RUN_DIR = '/run/netns';

/** Names as `ip netns` keeps them under /run/netns: one path component. */
function checkNetnsName(name: string): string {
  if (!/^[A-Za-z0-9_.-]{1,64}$/.test(name) || name === '.' || name === '..') {
    throw new ConfigError(`network namespace name '${name}' is not valid`, "give a name from 'ip netns list'");
  }
  return name;
}

function linkOrNull(name: string, what: string): LinkInfo | null {
  try {
    return linkShow(name);
  } catch (e) {
    kernelFailure(e, `looking up ${what} '${name}'`);
  }
}

export function setupVeth(req: EndpointRequest, _host: HostContext, rb: Rollback): KernelEndpoint {
  const netns = stringParam(req.params, 'netns');
  if (netns !== undefined) checkNetnsName(netns);
  if (req.dev && netns) throw new UsageError('veth takes a bridge (--dev) or a network namespace (params.netns), not both');
  const tag = randomBytes(3).toString('hex');
  const ifname = checkInterfaceName(stringParam(req.params, 'ifname') ?? `qnhv${tag}`, 'veth');
  const hostEnd = checkInterfaceName(stringParam(req.params, 'hostIfname') ?? `qnhv${tag}b`, 'veth host end');
  const peerName = stringParam(req.params, 'peerIfname');
  if (peerName !== undefined) checkInterfaceName(peerName, 'veth peer');
  if (ifname === hostEnd) throw new ConfigError(`the two ends of the veth cannot both be named '${ifname}'`);
  const mac = req.mac ? checkGuestMac(req.mac) : undefined;

  let bridge: LinkInfo | null = null;
  if (req.dev) {
    checkInterfaceName(req.dev, 'bridge');
    bridge = linkOrNull(req.dev, 'bridge');
    if (!bridge) throw new NotFoundError(`bridge '${req.dev}' does not exist in this network namespace`, `create it ('ip link add ${req.dev} type bridge') or pass another --dev`);
    if (linkKind(bridge) !== 'bridge') throw new NotFoundError(`'${req.dev}' is not a bridge (it is a ${linkKind(bridge)})`, 'pass the name of a Linux bridge with --dev');
  }
  if (netns && !existsSync(`${NETNS_RUN_DIR}/${netns}`)) {
    throw new NotFoundError(`network namespace '${netns}' does not exist (no ${NETNS_RUN_DIR}/${netns})`, "check 'ip netns list'");
  }
  const mtu = req.mtu ?? bridge?.mtu;

  const mtuArgs = mtu !== undefined ? ['mtu', String(mtu)] : [];
  try {
    ip('link', 'add', ifname, ...mtuArgs, 'type', 'veth', 'peer', 'name', hostEnd, ...mtuArgs);
  } catch (e) {
    if (e instanceof IpError && /File exists/i.test(ipReason(e))) {
      throw new ConfigError(`an interface named '${ifname}' or '${hostEnd}' already exists`, 'choose other names (params.ifname, params.hostIfname)');
    }
    kernelFailure(e, `creating veth pair ${ifname}/${hostEnd}`);
  }
  // Marked first (release deletes only links carrying it), then journaled at
  // once, so a helper killed from here on leaves a record gc can release.
  const marker = linkMarker(req.params, 'veth');
  markNewLink(ifname, marker);
  const ifindex = ifIndex(ifname);
  // Deleting the endpoint end deletes the pair, wherever the host end went.
  const owned: OwnedObject = { kind: OWNED_KIND, data: { ifname, ifindex, marker, hostIfname: hostEnd } };
  rb.add(`delete veth ${ifname}`, () => { releaseVeth(owned); }, { backend: 'veth', obj: owned });

  let hostEndName = hostEnd;
  try {
    if (bridge) {
      // Like the bridge+tap kernel: a port address starting with 0xfe keeps
      // the bridge's own MAC (the lowest of its ports') from changing.
      const m = getMac(hostEnd);
      m[0] = 0xfe;
      setMac(hostEnd, m);
      ip('link', 'set', 'dev', hostEnd, 'master', bridge.ifname, 'up');
    } else if (netns) {
      const args = ['link', 'set', 'dev', hostEnd, 'netns', netns];
      if (peerName) args.push('name', peerName);
      ip(...args);
      hostEndName = peerName ?? hostEnd;
      ip('-n', netns, 'link', 'set', 'dev', hostEndName, 'up');
    } else {
      ip('link', 'set', 'dev', hostEnd, 'up');
    }
    ip('link', 'set', 'dev', ifname, 'up');
  } catch (e) {
    kernelFailure(e, `wiring veth ${ifname}/${hostEnd}`);
  }
  const info = linkOrNull(ifname, 'veth');
  if (!info) throw new SetupError(`veth '${ifname}' vanished right after it was made`);

  return {
    kernel: 'veth',
    ifname,
    fds: [],
    vnetHdr: false,
    ...(mac ? { mac: formatMac(mac) } : {}),
    mtu: info.mtu,
    owned: [owned],
    info: { hostIfname: hostEndName, ...(bridge ? { bridge: bridge.ifname } : {}), ...(netns ? { netns } : {}), ifindex },
  };
}

/**
 * Deletes the pair when the endpoint end still is ours (name, kind veth,
 * ifindex, marker: klink.ts). If that end is gone, the pair is gone with it:
 * veth ends only exist in pairs, so nothing is left to find in the other
 * namespace. Returns why it was left alone, if it was.
 */
function releaseVeth(obj: OwnedObject): string | undefined {
  if (obj.kind !== OWNED_KIND) throw new SetupError(`the veth kernel cannot release objects of kind '${obj.kind}'`);
  return releaseLink(obj, ['veth']);
}

function probeVeth(req: Partial<EndpointRequest>, host: HostContext): Availability {
  if (!host.netAdmin) return { available: false, reason: 'creating a veth pair needs CAP_NET_ADMIN' };
  const k = kernelHas(FEATURES.veth);
  if (k.present === false) return { available: false, reason: `no veth in this kernel: ${k.how}` };
  if (req.dev) {
    const bad = interfaceNameProblem(req.dev);
    if (bad) return { available: false, reason: `bridge name '${req.dev}' ${bad}` };
    let l: LinkInfo | null;
    try {
      l = linkShow(req.dev);
    } catch (e) {
      return { available: false, reason: `cannot look up '${req.dev}': ${(e as Error).message}` };
    }
    if (!l) return { available: false, reason: `bridge '${req.dev}' does not exist in this network namespace` };
    if (linkKind(l) !== 'bridge') return { available: false, reason: `'${req.dev}' is not a bridge` };
    return { available: true, reason: `veth on bridge '${req.dev}' (${k.how})` };
  }
  return { available: true, reason: `veth pair (${k.how})` };
}

export const vethBackend: KernelBackend = {
  name: 'veth',
  yields: 'veth',
  probe: probeVeth,
  setup: setupVeth,
  release: (obj) => releaseVeth(obj),
};
