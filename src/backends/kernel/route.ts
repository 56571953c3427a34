// Kernel implementation "route": the guest gets a tap that is on no bridge;
// the host routes its address to it. Classic proxy-ARP routing:
//   - `ip route add <guestIp>/32 dev <tap> proto 213` (213 marks our routes);
//   - the uplink `req.dev` answers ARP for the guest (proxy_arp=1), so the
//     guest's address can sit inside the uplink's own subnet;
//   - the tap answers ARP for everything else (proxy_arp=1 on the tap), so the
//     guest may use any address as its gateway (the uplink's address is the
//     one reported in info.gateway);
//   - IPv4 forwarding is switched on per interface, on the tap and on the
//     uplink, instead of the global ip_forward: the kernel decides forwarding
//     by the *input* interface, so these two are all a routed guest needs.
// The tap dies with QEMU's fd, and its route and the tap's own sysctls with
// it. What outlives it is the uplink's proxy_arp/forwarding: they are owned
// objects, shared by every routed endpoint on that uplink.
//
// Restoring the uplink's settings, kept simple: the first routed endpoint on
// an uplink records the values it found (<stateDir>/route/<uplink>.json) and
// sets 1; each endpoint is a "user" there (tap name + ifindex). Releasing the
// last user (users whose tap no longer exists count as gone: a crashed QEMU
// needs no proxy ARP) writes the recorded values back, but only where the
// value is still the 1 we wrote: a setting someone else changed since is
// theirs. A value that was already 1 before us is never recorded, so never
// turned off. All of it under one flock, so concurrent helpers agree.
import { existsSync, rmSync } from 'node:fs';
import { join } from 'node:path';
import { isIPv4 } from 'node:net';
import { ConfigError, NotFoundError, SetupError, UsageError } from '../../errors.js';
import { checkInterfaceName, interfaceNameProblem } from '../../net/ifname.js';
import { ip, IpError, ipJson, linkShow, type LinkInfo } from '../../net/ip.js';
import { checkGuestMac, formatMac } from '../../net/mac.js';
import { ipv4ConfPath, readSysctl, writeSysctl } from '../../net/sysctl.js';
import type { Rollback } from '../../state/rollback.js';
import { closeFd } from '../../sys/libc.js';
import { getMac, ifIndex, setMac, setMtu, setUp } from '../../sys/netdev.js';
import { createTap, setPersist, type Tap } from '../../sys/tun.js';
import type { Availability, EndpointRequest, HostContext, KernelBackend, KernelEndpoint, OwnedObject } from '../types.js';
import { tunError } from './bridge-tap.js';
import { dataString, ipReason, kernelFailure, stringParam } from './kerrors.js';
import { identityMismatch, KIND_LINK, linkMarker, linkOrNull, markLink, recordedIdentity, releaseLink } from './klink.js';
import { FEATURES, kernelHas } from './kprobe.js';
import { readJson, withLock, writeJson } from './kstate.js';

/** Route protocol number marking the host routes we add (unassigned in iproute2's rt_protos). */
export const ROUTE_PROTO = '213';
export const KIND_ROUTE = 'route';
export const KIND_UPLINK = 'route-uplink';
/** Uplink sysctls a routed guest needs; each restored on the last release. */
const UPLINK_KEYS = ['proxy_arp', 'forwarding'] as const;

interface UplinkUser { tap: string; tapIndex: number; guestIp: string }
interface UplinkState {
  uplink: string;
  uplinkIndex: number;
  /** Values found before we set 1; only keys we changed are here. */
  saved: Partial<Record<(typeof UPLINK_KEYS)[number], string>>;
  users: UplinkUser[];
}

function stateDirOf(host: HostContext): string {
  return join(host.stateDir, 'route');
}
function stateFile(host: HostContext, uplink: string): string {
  return join(stateDirOf(host), `${uplink}.json`);
}
function lockFile(host: HostContext): string {
  return join(stateDirOf(host), 'lock');
}

function tapAlive(u: UplinkUser): boolean {
  return ifIndex(u.tap) === u.tapIndex;
}

/** Records `user` on the uplink and makes sure proxy_arp and forwarding are 1 there. */
export function uplinkAcquire(host: HostContext, uplink: string, user: UplinkUser): void {
  withLock(lockFile(host), () => {
    const file = stateFile(host, uplink);
    const uplinkIndex = ifIndex(uplink);
    if (uplinkIndex === 0) throw new NotFoundError(`uplink '${uplink}' does not exist in this network namespace`);
    let st = readJson<UplinkState>(file);
    // A re-created uplink starts from the kernel's defaults: old records mean nothing.
    if (!st || st.uplinkIndex !== uplinkIndex || !Array.isArray(st.users)) st = { uplink, uplinkIndex, saved: {}, users: [] };
    st.users = st.users.filter((u) => tapAlive(u) && !(u.tap === user.tap && u.tapIndex === user.tapIndex));
    // Saved values stay even when every recorded user is dead: the settings
    // are still our 1s, and the values before them are only known here.
    for (const key of UPLINK_KEYS) {
      const path = ipv4ConfPath(uplink, key);
      const cur = readSysctl(path);
      if (cur !== '1') {
        if (!(key in st.saved)) st.saved[key] = cur;
        writeSysctl(path, '1');
      }
    }
    st.users.push(user);
    writeJson(file, st);
  });
}

/** Drops `user`; when no live user is left, puts back the values we changed. */
function uplinkRelease(host: HostContext, uplink: string, user: Pick<UplinkUser, 'tap' | 'tapIndex'>): void {
  withLock(lockFile(host), () => {
    const file = stateFile(host, uplink);
    const st = readJson<UplinkState>(file);
    if (!st) return;
    if (st.uplinkIndex !== ifIndex(uplink) || !Array.isArray(st.users)) {
      // The uplink is gone (or was re-created): its settings went with it.
      rmSync(file, { force: true });
      return;
    }
    st.users = st.users.filter((u) => !(u.tap === user.tap && u.tapIndex === user.tapIndex) && tapAlive(u));
    if (st.users.length > 0) {
      writeJson(file, st);
      return;
    }
    for (const key of UPLINK_KEYS) {
      const old = st.saved[key];
      if (old === undefined) continue;
      const path = ipv4ConfPath(uplink, key);
      if (existsSync(path) && readSysctl(path) === '1') writeSysctl(path, old);
    }
    rmSync(file, { force: true });
  });
}

function routeDel(dst: string, tap: string): void {
  try {
    ip('route', 'del', dst, 'dev', tap, 'proto', ROUTE_PROTO);
  } catch (e) {
    // Gone already: the tap (and every route on it) died with QEMU's fd, or someone removed the route.
    if (e instanceof IpError && /No such process|Cannot find device|does not exist|No such device/i.test(ipReason(e))) return;
    kernelFailure(e, `deleting route ${dst} dev ${tap}`);
  }
}

function setupRoute(req: EndpointRequest, host: HostContext, rb: Rollback): KernelEndpoint {
  if (!req.guestIp) throw new UsageError('a routed guest needs its address', 'set "guestIp" in the profile');
  if (!isIPv4(req.guestIp)) throw new UsageError(`guest address '${req.guestIp}' is not an IPv4 address`, 'routed mode supports IPv4 guests');
  if (!req.dev) throw new UsageError('a routed guest needs an uplink', 'pass --dev=<uplink interface>');
  const uplink = checkInterfaceName(req.dev, 'uplink');
  const tapName = stringParam(req.params, 'ifname');
  if (tapName !== undefined) checkInterfaceName(tapName, 'tap');
  const mac = req.mac ? checkGuestMac(req.mac) : undefined;
  let up: LinkInfo | null;
  try {
    up = linkShow(uplink);
  } catch (e) {
    kernelFailure(e, `looking up uplink '${uplink}'`);
  }
  if (!up) throw new NotFoundError(`uplink '${uplink}' does not exist in this network namespace`, "check the name with 'ip link' or pass another --dev");
  const guestIp = req.guestIp;
  const addrs = ipJson<{ ifname: string; addr_info?: { family: string; local: string; prefixlen: number }[] }>('-4', 'addr', 'show');
  const local = addrs.find((a) => a.addr_info?.some((x) => x.local === guestIp));
  if (local) throw new ConfigError(`guest address ${guestIp} is an address of this host (on ${local.ifname})`, 'give the guest an address of its own');
  const gateway = addrs.find((a) => a.ifname === uplink)?.addr_info?.find((x) => x.family === 'inet')?.local;

  let tap: Tap;
  try {
    tap = createTap({ vnetHdr: req.vnetHdr, tunDevice: host.tunDevice, ...(tapName ? { name: tapName } : {}) });
  } catch (e) {
    tunError(e, host.tunDevice);
  }
  rb.add(`close tap ${tap.name}`, () => closeFd(tap.fd));
  // Every routed tap carries our marker, persistent or not: releasing its
  // route checks the tap still is ours (klink.ts). Until it is persistent the
  // tap dies with our fd, so a failure here leaks nothing.
  const marker = linkMarker(req.params, 'route');
  markLink(tap.name, marker);
  const tapIndex = ifIndex(tap.name);
  const owned: OwnedObject[] = [];
  if (req.persist) {
    // `up`: no QEMU holds the tap yet, so it must outlive our fd. Journaled
    // first, made persistent second: a crash in between leaks nothing.
    const link: OwnedObject = { kind: KIND_LINK, data: { ifname: tap.name, ifindex: tapIndex, marker } };
    rb.add(`delete tap ${tap.name}`, () => { releaseLink(link, ['tun']); }, { backend: 'route', obj: link });
    owned.push(link);
    try {
      setPersist(tap.fd, true);
    } catch (e) {
      kernelFailure(e, `making tap ${tap.name} persistent`);
    }
  }
  const mtu = req.mtu ?? up.mtu;
  try {
    setMtu(tap.name, mtu);
    const hostMac = getMac(tap.name);
    hostMac[0] = 0xfe;
    setMac(tap.name, hostMac);
    // The tap answers the guest's ARP for any address (its gateway) and
    // forwards what the guest sends; both settings die with the tap.
    writeSysctl(ipv4ConfPath(tap.name, 'proxy_arp'), '1');
    writeSysctl(ipv4ConfPath(tap.name, 'forwarding'), '1');
    // The kernel refuses a route through a link that is administratively
    // down ("Device for nexthop is not up"), so up first.
    setUp(tap.name);
  } catch (e) {
    kernelFailure(e, `setting up tap ${tap.name}`);
  }

  const dst = `${guestIp}/32`;
  try {
    ip('route', 'add', dst, 'dev', tap.name, 'proto', ROUTE_PROTO, 'scope', 'link');
  } catch (e) {
    if (e instanceof IpError && /File exists/i.test(ipReason(e))) {
      let via = '';
      try { via = ip('route', 'show', dst).trim(); } catch { /* none */ }
      throw new ConfigError(`there already is a route for ${dst}${via ? ` (${via})` : ''}`, 'is another guest using this address? give each routed guest its own');
    }
    kernelFailure(e, `adding route ${dst} dev ${tap.name}`);
  }
  const route: OwnedObject = { kind: KIND_ROUTE, data: { dst, dev: tap.name, ifindex: tapIndex, marker } };
  rb.add(`delete route ${dst}`, () => { releaseRoute(route, host); }, { backend: 'route', obj: route });
  owned.push(route);

  // Journaled *before* the change: releasing a user that was never recorded
  // is harmless, while a change made without a record could never be undone.
  const user = { tap: tap.name, tapIndex, guestIp };
  const proxy: OwnedObject = { kind: KIND_UPLINK, data: { uplink, tap: tap.name, tapIndex, marker } };
  rb.add(`proxy ARP on ${uplink}`, () => { releaseRoute(proxy, host); }, { backend: 'route', obj: proxy });
  owned.push(proxy);
  uplinkAcquire(host, uplink, user);

  const hostMac = getMac(tap.name);
  return {
    kernel: 'route',
    ifname: tap.name,
    fds: [tap.fd],
    vnetHdr: tap.vnetHdr,
    ...(mac ? { mac: formatMac(mac) } : {}),
    mtu,
    owned,
    info: { uplink, guestIp, hostMac: formatMac(hostMac), ...(gateway ? { gateway } : {}), routeProto: Number(ROUTE_PROTO) },
  };
}

/** What a routed endpoint goes through: the helper's tap, or the host end of a CNI container's veth. */
const ROUTED_KINDS = ['tun', 'veth'];

/** Deletes our route to the guest when the tap it goes through still is ours; else says why not. */
function releaseGuestRoute(obj: OwnedObject): string | undefined {
  const dst = dataString(obj.data, 'dst', obj.kind);
  if (!/^\d{1,3}(\.\d{1,3}){3}\/32$/.test(dst) || !isIPv4(dst.slice(0, -3))) return `left alone: '${dst}' is not a guest route of ours`;
  const id = recordedIdentity({ ifname: obj.data.dev, ifindex: obj.data.ifindex, marker: obj.data.marker });
  if (typeof id === 'string') return `left alone: ${id}`;
  const l = linkOrNull(id.ifname);
  if (!l) return undefined; // the route died with the tap
  // A tap of that name that is not ours is someone else's: our route died with ours.
  const bad = identityMismatch(l, id, ROUTED_KINDS);
  if (bad) return `left alone: ${bad}`;
  routeDel(dst, id.ifname);
  return undefined;
}

export function releaseRoute(obj: OwnedObject, host: HostContext): string | undefined {
  if (obj.kind === KIND_ROUTE) return releaseGuestRoute(obj);
  if (obj.kind === KIND_LINK) return releaseLink(obj, ['tun']);
  if (obj.kind === KIND_UPLINK) {
    const uplink = dataString(obj.data, 'uplink', obj.kind);
    // The name becomes a state file and a /proc/sys path: nothing but an interface name.
    const badName = interfaceNameProblem(uplink);
    if (badName) return `left alone: uplink name ${JSON.stringify(uplink)} ${badName}`;
    const id = recordedIdentity({ ifname: obj.data.tap, ifindex: obj.data.tapIndex, marker: obj.data.marker });
    if (typeof id === 'string') return `left alone: ${id}`;
    // While the tap lives, only the endpoint whose marker it carries may leave:
    // another record naming it must not end a live guest's proxy ARP.
    const l = linkOrNull(id.ifname);
    const bad = l && l.ifindex === id.ifindex ? identityMismatch(l, id, ROUTED_KINDS) : null;
    if (bad) return `left alone: ${bad}`;
    uplinkRelease(host, uplink, { tap: id.ifname, tapIndex: id.ifindex });
    return undefined;
  }
  throw new SetupError(`the route kernel cannot release objects of kind '${obj.kind}'`);
}

function probeRoute(req: Partial<EndpointRequest>, host: HostContext): Availability {
  if (!host.netAdmin) return { available: false, reason: 'routing a guest needs CAP_NET_ADMIN' };
  const k = kernelHas(FEATURES.tun);
  if (k.present === false) return { available: false, reason: `no tun/tap in this kernel: ${k.how}` };
  if (!existsSync(host.tunDevice)) return { available: false, reason: `${host.tunDevice} does not exist` };
  if (!existsSync('/proc/sys/net/ipv4/conf')) return { available: false, reason: 'IPv4 is not available in this network namespace' };
  if (req.guestIp !== undefined && !isIPv4(req.guestIp)) return { available: false, reason: `guest address '${req.guestIp}' is not IPv4` };
  if (!req.dev) return { available: false, reason: 'routed mode needs an uplink (--dev)' };
  const bad = interfaceNameProblem(req.dev);
  if (bad) return { available: false, reason: `uplink name '${req.dev}' ${bad}` };
  if (ifIndex(req.dev) === 0) return { available: false, reason: `uplink '${req.dev}' does not exist in this network namespace` };
  return { available: true, reason: `routed tap with proxy ARP on '${req.dev}' (${k.how})` };
}

export const routeBackend: KernelBackend = {
  name: 'route',
  yields: 'tap',
  probe: probeRoute,
  setup: setupRoute,
  release: releaseRoute,
};
