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
// addresses back when it is re-created.
import { existsSync, mkdirSync, rmSync } from 'node:fs';
import { join } from 'node:path';
import { ConfigError, SetupError, UsageError } from '../../errors.js';
import {
  dhcpHosts, dnsmasqPaths, dnsmasqPid, removeDhcpHost, restartDnsmasq, startDnsmasq, stopDnsmasq, writeDhcpHost, type DnsmasqConfig,
} from '../../net/dnsmasq.js';
import { checkInterfaceName } from '../../net/ifname.js';
import { ip, ipJson, linkDelete, linkKind, linkShow, type LinkInfo } from '../../net/ip.js';
import {
  broadcastOf, contains, firstHost, ipToNumber, netmaskOf, numberToIp, overlaps, parseSubnet, subnetToString, type Subnet,
} from '../../net/ipv4.js';
import { checkGuestMac, formatMac } from '../../net/mac.js';
import { isNftIdentifier, nftApply, nftDeleteTable, nftTableExists } from '../../net/nft.js';
import { IP_FORWARD, readSysctl, writeSysctl } from '../../net/sysctl.js';
import type { Rollback } from '../../setup/rollback.js';
import { ifIndex } from '../../sys/netdev.js';
import type { Availability, EndpointRequest, HostContext, KernelBackend, KernelEndpoint, OwnedObject } from '../types.js';
import { setupBridgeTap } from './bridge-tap.js';
import { booleanParam, dataString, kernelFailure, stringParam } from './kerrors.js';
import { KIND_LINK, releaseLink } from './klink.js';
import { FEATURES, kernelHas, type FeatureAnswer } from './kprobe.js';
import { readJson, withLock, writeJson } from './kstate.js';

export const DEFAULT_NAT_BRIDGE = 'qnhnat0';
/** Where a NAT network without a configured subnet takes its /24 from. */
export const AUTO_NAT_RANGE = '10.213.0.0/16';
export const NAT_TABLE_PREFIX = 'qemu_net_helper_';
export const KIND_NAT = 'nat-network';
export const KIND_RESERVATION = 'nat-reservation';
/** Smallest NAT network: /30 = gateway + one guest. */
export const MAX_NAT_PREFIX = 30;
export const MIN_NAT_PREFIX = 8;

/** What we know about a NAT network we made; <stateDir>/nat/<bridge>/network.json. */
export interface NatRecord {
  bridge: string;
  /** ifindex of the bridge we created: a bridge of that name with another index is not ours. */
  bridgeIndex?: number;
  subnet: string;
  gateway: string;
  table: string;
  /** Whether ip_forward was 0 and we set it (reported; never put back). */
  enabledIpForward?: boolean;
  /** The daemon's configuration, so any later helper can restart it the same way. */
  dnsmasq: DnsmasqConfig;
}

export function natBridgeName(req: Pick<EndpointRequest, 'dev' | 'params'>): string {
  const name = stringParam(req.params, 'bridge') ?? req.dev ?? DEFAULT_NAT_BRIDGE;
  checkInterfaceName(name, 'NAT bridge');
  // The name goes into an nft table name and a quoted nft string: keep it to what both take.
  if (!/^[A-Za-z0-9_][A-Za-z0-9_.-]*$/.test(name)) {
    throw new UsageError(`NAT bridge name '${name}' has characters a NAT network cannot use`, 'use letters, digits, -, _ and . only');
  }
  return name;
}

export function natTableName(bridge: string): string {
  const t = `${NAT_TABLE_PREFIX}${bridge}`;
  if (!isNftIdentifier(t)) throw new UsageError(`cannot name an nft table after bridge '${bridge}'`);
  return t;
}

/** The nft ruleset of one NAT network: one table, replaced atomically when it exists. */
export function natRuleset(table: string, bridge: string, subnet: Subnet): string {
  const net = subnetToString(subnet);
  const br = `"${bridge}"`;
  return [
    // add+delete first makes the whole file a replace, whether the table exists or not.
    `add table ip ${table}`,
    `delete table ip ${table}`,
    `table ip ${table} {`,
    `  comment "qemu-net-helper NAT network on bridge ${bridge}"`,
    '  chain postrouting {',
    '    type nat hook postrouting priority srcnat; policy accept;',
    // Link-local multicast and broadcast stay as they are (as libvirt does).
    `    ip saddr ${net} ip daddr 224.0.0.0/24 return`,
    `    ip saddr ${net} ip daddr 255.255.255.255 return`,
    `    ip saddr ${net} ip daddr != ${net} oifname != ${br} counter masquerade comment "masquerade"`,
    '  }',
    '  chain forward {',
    '    type filter hook forward priority filter; policy accept;',
    `    iifname ${br} oifname ${br} counter accept comment "guest-to-guest"`,
    `    iifname ${br} ip saddr ${net} counter accept comment "outbound"`,
    `    oifname ${br} ip daddr ${net} ct state established,related counter accept comment "replies"`,
    `    iifname ${br} counter reject comment "spoofed-source"`,
    `    oifname ${br} counter reject comment "unsolicited-inbound"`,
    '  }',
    '}',
    '',
  ].join('\n');
}

/** IPv4 subnets in use in this namespace: interface addresses and main-table routes (default route excluded). */
export function subnetsInUse(): { subnet: Subnet; what: string }[] {
  const used: { subnet: Subnet; what: string }[] = [];
  const addrs = ipJson<{ ifname: string; addr_info?: { family: string; local: string; prefixlen: number }[] }>('-4', 'addr', 'show');
  for (const a of addrs) {
    for (const x of a.addr_info ?? []) {
      if (x.family !== 'inet') continue;
      const n = ipToNumber(x.local);
      const mask = x.prefixlen === 0 ? 0 : (0xffffffff << (32 - x.prefixlen)) >>> 0;
      used.push({ subnet: { network: (n & mask) >>> 0, prefix: x.prefixlen }, what: `${x.local}/${x.prefixlen} on ${a.ifname}` });
    }
  }
  for (const r of ipJson<{ dst: string; dev?: string }>('-4', 'route', 'show')) {
    if (!r.dst || r.dst === 'default') continue;
    const [addr, p] = r.dst.split('/');
    try {
      const prefix = p === undefined ? 32 : Number(p);
      const n = ipToNumber(addr!);
      const mask = prefix === 0 ? 0 : (0xffffffff << (32 - prefix)) >>> 0;
      used.push({ subnet: { network: (n & mask) >>> 0, prefix }, what: `route ${r.dst}${r.dev ? ` dev ${r.dev}` : ''}` });
    } catch { /* not an address we understand: ignore */ }
  }
  return used;
}

/** 10.213.X.0/24 with the lowest X that overlaps nothing in use. */
export function pickDefaultSubnet(used: Subnet[]): Subnet {
  for (let x = 0; x < 256; x++) {
    const s = { network: ipToNumber(`10.213.${x}.0`), prefix: 24 };
    if (!used.some((u) => overlaps(u, s))) return s;
  }
  throw new ConfigError('every 10.213.X.0/24 overlaps an address or route of this host', 'set "subnet" in the profile');
}

export function dhcpRange(subnet: Subnet): { start: string; end: string } {
  return { start: numberToIp(firstHost(subnet) + 1), end: numberToIp(broadcastOf(subnet) - 1) };
}

interface NatOptions {
  bridge: string;
  dir: string;
  subnet?: Subnet;
  leaseTime: string;
  dhcpPing: boolean;
  dns: string[];
}

function dnsmasqConfig(o: NatOptions, subnet: Subnet): DnsmasqConfig {
  const range = dhcpRange(subnet);
  return {
    dir: o.dir,
    iface: o.bridge,
    rangeStart: range.start,
    rangeEnd: range.end,
    netmask: netmaskOf(subnet.prefix),
    leaseTime: o.leaseTime,
    ping: o.dhcpPing,
    dnsServers: o.dns,
  };
}

function natDir(host: HostContext, bridge: string): string {
  return join(host.stateDir, 'nat', bridge);
}
function natLock(host: HostContext): string {
  return join(host.stateDir, 'nat', 'lock');
}
function recordPath(dir: string): string {
  return join(dir, 'network.json');
}

/**
 * Removes what is left of a NAT network, in the order that keeps a crash in
 * between harmless: daemon, rules, bridge (only if it is ours), record last.
 */
export function teardownNetwork(host: HostContext, bridge: string): void {
  const dir = natDir(host, bridge);
  const rec = readJson<NatRecord>(recordPath(dir));
  const p = dnsmasqPaths(dir);
  stopDnsmasq(p.pidFile);
  nftDeleteTable('ip', rec?.table ?? natTableName(bridge), host.bin.nft);
  if (rec) {
    const l = linkShow(bridge);
    if (l && linkKind(l) === 'bridge' && (rec.bridgeIndex === undefined || rec.bridgeIndex === l.ifindex)) linkDelete(bridge);
  }
  rmSync(p.hostsDir, { recursive: true, force: true });
  rmSync(p.logFile, { force: true });
  rmSync(join(dir, 'dnsmasq.start.err'), { force: true });
  rmSync(recordPath(dir), { force: true });
}

function ensureIpForward(): boolean {
  if (readSysctl(IP_FORWARD) === '1') return false;
  writeSysctl(IP_FORWARD, '1');
  return true;
}

/**
 * Creates the network, or checks and heals the existing one. Runs under the
 * NAT lock. `journal` is called once all checks passed and before the first
 * change, so the owned object is on record before anything exists.
 */
function ensureNetwork(host: HostContext, o: NatOptions, journal: () => void): { rec: NatRecord; created: boolean } {
  const rec = readJson<NatRecord>(recordPath(o.dir));
  const link = linkShow(o.bridge);
  if (link) {
    if (!rec) {
      throw new ConfigError(`'${o.bridge}' exists and is not a NAT network made by qemu-net-helper`, 'pass another bridge name for the NAT network (params.bridge or --dev)');
    }
    if (linkKind(link) !== 'bridge' || (rec.bridgeIndex !== undefined && rec.bridgeIndex !== link.ifindex)) {
      throw new ConfigError(`'${o.bridge}' was re-created by someone else since qemu-net-helper made its NAT network`, `remove it or choose another NAT bridge name; stale state is in ${o.dir}`);
    }
    const subnet = parseSubnet(rec.subnet);
    if (o.subnet && subnetToString(o.subnet) !== rec.subnet) {
      throw new ConfigError(`NAT network '${o.bridge}' already uses ${rec.subnet}, not ${subnetToString(o.subnet)}`, 'ask for the same subnet, or another bridge name for a second network');
    }
    journal();
    // Heal what a crash or an admin may have removed; never touch a healthy part.
    ensureIpForward();
    if (!nftTableExists('ip', rec.table, host.bin.nft)) nftApply(natRuleset(rec.table, o.bridge, subnet), host.bin.nft);
    if (dnsmasqPid(dnsmasqPaths(o.dir).pidFile) === null) startDnsmasq(rec.dnsmasq ?? dnsmasqConfig(o, subnet), host.bin.dnsmasq);
    return { rec, created: false };
  }

  const used = subnetsInUse();
  let subnet: Subnet;
  if (o.subnet) {
    const clash = used.find((u) => overlaps(u.subnet, o.subnet!));
    if (clash) throw new ConfigError(`subnet ${subnetToString(o.subnet)} overlaps ${clash.what}`, 'choose a subnet that is not in use on this host');
    subnet = o.subnet;
  } else {
    subnet = pickDefaultSubnet(used.map((u) => u.subnet));
  }
  journal();
  // No bridge: whatever record there is belongs to a network that is gone.
  if (rec) teardownNetwork(host, o.bridge);
  const gateway = numberToIp(firstHost(subnet));
  const table = natTableName(o.bridge);
  const newRec: NatRecord = { bridge: o.bridge, subnet: subnetToString(subnet), gateway, table, dnsmasq: dnsmasqConfig(o, subnet) };
  mkdirSync(o.dir, { recursive: true, mode: 0o755 });
  writeJson(recordPath(o.dir), newRec);
  try {
    ip('link', 'add', o.bridge, 'type', 'bridge');
    newRec.bridgeIndex = ifIndex(o.bridge);
    writeJson(recordPath(o.dir), newRec);
    ip('addr', 'add', `${gateway}/${subnet.prefix}`, 'dev', o.bridge);
    ip('link', 'set', 'dev', o.bridge, 'up');
    newRec.enabledIpForward = ensureIpForward();
    writeJson(recordPath(o.dir), newRec);
    nftApply(natRuleset(table, o.bridge, subnet), host.bin.nft);
    startDnsmasq(newRec.dnsmasq, host.bin.dnsmasq);
  } catch (e) {
    try { teardownNetwork(host, o.bridge); } catch { /* report the first failure */ }
    kernelFailure(e, `creating NAT network '${o.bridge}'`);
  }
  return { rec: newRec, created: true };
}

function bridgePorts(bridge: string): LinkInfo[] {
  try {
    return ipJson<LinkInfo>('link', 'show', 'master', bridge);
  } catch {
    return [];
  }
}

/**
 * An endpoint leaves the network; the network goes when no port is left on
 * its bridge. Ports are the truth: a tap disappears with its QEMU, a guest
 * that is still running keeps its tap and so the network, and a port someone
 * else plugged in counts too.
 */
export function leaveNetwork(host: HostContext, bridge: string): void {
  withLock(natLock(host), () => {
    if (!readJson<NatRecord>(recordPath(natDir(host, bridge)))) return; // torn down already
    if (bridgePorts(bridge).length > 0) return;
    teardownNetwork(host, bridge);
  });
}

/** Drops a guest's fixed address; dnsmasq is restarted to forget it (see writeDhcpHost). */
export function dropReservation(host: HostContext, bridge: string, mac: string): void {
  withLock(natLock(host), () => {
    const dir = natDir(host, bridge);
    if (!dhcpHosts(dir).has(mac)) return;
    removeDhcpHost(dir, mac);
    const rec = readJson<NatRecord>(recordPath(dir));
    if (rec?.dnsmasq && dnsmasqPid(dnsmasqPaths(dir).pidFile) !== null) restartDnsmasq(rec.dnsmasq, host.bin.dnsmasq);
  });
}

function parseDns(v: unknown): string[] {
  if (v === undefined || v === null) return [];
  const list = typeof v === 'string' ? v.split(',').map((s) => s.trim()).filter(Boolean) : v;
  if (!Array.isArray(list) || !list.every((x) => typeof x === 'string')) throw new ConfigError(`parameter 'dns' must be a list of IPv4 addresses, not ${JSON.stringify(v)}`);
  for (const x of list as string[]) ipToNumber(x);
  return list as string[];
}

export function setupNat(req: EndpointRequest, host: HostContext, rb: Rollback): KernelEndpoint {
  const bridge = natBridgeName(req);
  const subnetText = req.subnet ?? stringParam(req.params, 'subnet');
  const subnet = subnetText !== undefined ? parseSubnet(subnetText, { minPrefix: MIN_NAT_PREFIX, maxPrefix: MAX_NAT_PREFIX }) : undefined;
  const leaseTime = stringParam(req.params, 'leaseTime') ?? '1h';
  if (!/^(\d+[smhdw]?|infinite)$/.test(leaseTime)) throw new ConfigError(`leaseTime '${leaseTime}' is not a dnsmasq lease time`, 'write e.g. 1h, 30m, 86400 or infinite');
  const tapName = stringParam(req.params, 'ifname');
  if (tapName !== undefined) checkInterfaceName(tapName, 'tap');
  const mac = req.mac ? checkGuestMac(req.mac) : undefined;
  if (req.guestIp !== undefined) {
    ipToNumber(req.guestIp);
    if (!mac) throw new UsageError(`a fixed guest address (${req.guestIp}) needs the guest's MAC`, 'pass --mac too, the one the guest NIC uses');
  }
  const o: NatOptions = {
    bridge,
    dir: natDir(host, bridge),
    ...(subnet ? { subnet } : {}),
    leaseTime,
    dhcpPing: booleanParam(req.params, 'dhcpPing') ?? true,
    dns: parseDns(req.params.dns),
  };

  // One lock from the first look to the tap on the bridge: a concurrent last
  // release cannot remove the network between our "it exists" and our join.
  return withLock(natLock(host), () => {
    const owned: OwnedObject[] = [];
    const network: OwnedObject = { kind: KIND_NAT, data: { bridge } };
    const { rec, created } = ensureNetwork(host, o, () => {
      // Undo = leaving: the network goes again if nobody else is on it.
      rb.add(`leave NAT network ${bridge}`, () => leaveNetwork(host, bridge), { backend: 'nat', obj: network });
      owned.push(network);
    });
    const net = parseSubnet(rec.subnet);

    if (req.guestIp !== undefined) {
      const g = ipToNumber(req.guestIp);
      if (!contains(net, g) || g === net.network || g === broadcastOf(net) || g === firstHost(net)) {
        throw new UsageError(`guest address ${req.guestIp} is not a guest address of NAT network ${rec.subnet}`, `choose one in ${dhcpRange(net).start}-${dhcpRange(net).end}`);
      }
      const fixedMac = formatMac(mac!);
      const taken = [...dhcpHosts(o.dir)].find(([m, a]) => a === req.guestIp && m !== fixedMac);
      if (taken) throw new ConfigError(`guest address ${req.guestIp} is reserved for ${taken[0]} on NAT network '${bridge}'`, 'give each guest its own address');
      const reservation: OwnedObject = { kind: KIND_RESERVATION, data: { bridge, mac: fixedMac, ip: req.guestIp } };
      rb.add(`drop reservation ${fixedMac}`, () => dropReservation(host, bridge, fixedMac), { backend: 'nat', obj: reservation });
      owned.push(reservation);
      writeDhcpHost(o.dir, fixedMac, req.guestIp);
      // dnsmasq learns fixed addresses only when it starts: restart it (leases are kept in its lease file).
      restartDnsmasq(rec.dnsmasq ?? dnsmasqConfig(o, net), host.bin.dnsmasq);
    }

    // A persistent tap (`up`) is journaled by setupBridgeTap as {kind: 'link'} for this kernel.
    const ep = setupBridgeTap({ bridge, vnetHdr: req.vnetHdr, tunDevice: host.tunDevice, ...(tapName ? { tapName } : {}), ...(req.persist ? { persist: { backend: 'nat', remove: linkDelete } } : {}) }, rb);
    if (req.persist) owned.push({ kind: KIND_LINK, data: { ifname: ep.tap.name } });

    return {
      kernel: 'nat',
      ifname: ep.tap.name,
      fds: [ep.tap.fd],
      vnetHdr: ep.tap.vnetHdr,
      ...(mac ? { mac: formatMac(mac) } : {}),
      mtu: ep.mtu,
      owned,
      info: {
        bridge,
        subnet: rec.subnet,
        gateway: rec.gateway,
        dhcpRange: dhcpRange(net),
        networkCreated: created,
        stateDir: o.dir,
        ...(req.guestIp ? { guestIp: req.guestIp } : {}),
      },
    };
  });
}

export function releaseNat(obj: OwnedObject, host: HostContext): void {
  switch (obj.kind) {
    case KIND_NAT:
      leaveNetwork(host, dataString(obj.data, 'bridge', obj.kind));
      return;
    case KIND_RESERVATION:
      dropReservation(host, dataString(obj.data, 'bridge', obj.kind), dataString(obj.data, 'mac', obj.kind));
      return;
    case KIND_LINK:
      releaseLink(obj, ['tun']);
      return;
    default:
      throw new SetupError(`the nat kernel cannot release objects of kind '${obj.kind}'`);
  }
}

export function probeNat(req: Partial<EndpointRequest>, host: HostContext): Availability {
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
  probe: probeNat,
  setup: setupNat,
  release: releaseNat,
};
