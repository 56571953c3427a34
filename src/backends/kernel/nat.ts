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
import { existsSync, rmSync } from 'node:fs';
import { join } from 'node:path';
import { ConfigError, SetupError, UsageError } from '../../errors.js';
import {
  dhcpHosts, dnsmasqPaths, dnsmasqPid, removeDhcpHost, restartDnsmasq, startDnsmasq, stopDnsmasq, writeDhcpHost, type DnsmasqConfig,
} from '../../net/dnsmasq.js';
import { checkInterfaceName } from '../../net/ifname.js';
import { ip, ipJson, linkDelete, linkShow, type LinkInfo } from '../../net/ip.js';
import {
  broadcastOf, contains, firstHost, ipToNumber, netmaskOf, numberToIp, overlaps, parseSubnet, subnetToString, type Subnet,
} from '../../net/ipv4.js';
import { checkGuestMac, formatMac } from '../../net/mac.js';
import { nftApply, nftDeleteTable, nftTableComment, nftTableExists } from '../../net/nft.js';
import { IP_FORWARD, readSysctl, writeSysctl } from '../../net/sysctl.js';
import type { Rollback } from '../../setup/rollback.js';
import { ifIndex } from '../../sys/netdev.js';
import type { Availability, EndpointRequest, HostContext, KernelBackend, KernelEndpoint, OwnedObject } from '../types.js';
import { setupBridgeTap } from './bridge-tap.js';
import { booleanParam, dataString, kernelFailure, stringParam } from './kerrors.js';
import { identityMismatch, KIND_LINK, linkMarker, markLink, markNewLink, releaseLink, type LinkIdentity } from './klink.js';
import { FEATURES, kernelHas, type FeatureAnswer } from './kprobe.js';
import { ensureDir } from '../../state/atomic-file.js';
import { readJson, withLock, writeJson } from './kstate.js';
import {
  NAT_TABLE_PREFIX, NAT_BRIDGE_MARKER, MAX_NAT_PREFIX, MIN_NAT_PREFIX, natBridgeName, checkNatBridgeName, natTableName, natTableComment, natRuleset, subnetsInUse, pickDefaultSubnet, dhcpRange,
} from './nat-plan.js';

// Re-exported: callers and tests know these as the NAT kernel's.
export {
  DEFAULT_NAT_BRIDGE, AUTO_NAT_RANGE, NAT_TABLE_PREFIX, NAT_BRIDGE_MARKER, MAX_NAT_PREFIX, MIN_NAT_PREFIX, natBridgeName, checkNatBridgeName, natTableName, natTableComment, natRuleset, subnetsInUse, pickDefaultSubnet, dhcpRange,
} from './nat-plan.js';

export const KIND_NAT = 'nat-network';
export const KIND_RESERVATION = 'nat-reservation';

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

/**
 * The recorded dnsmasq configuration, pinned to this network's own directory
 * and bridge: a record must not choose where a root dnsmasq writes its pid,
 * lease and log files, nor which interface it serves.
 */
function recordedDnsmasq(rec: NatRecord, dir: string, bridge: string): DnsmasqConfig | undefined {
  return rec.dnsmasq ? { ...rec.dnsmasq, dir, iface: bridge } : undefined;
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

/** The identity our NAT bridge must have (klink.ts), from its record. */
function bridgeIdentity(bridge: string, rec: NatRecord | null): LinkIdentity | null {
  return rec && typeof rec.bridgeIndex === 'number' ? { ifname: bridge, ifindex: rec.bridgeIndex, marker: NAT_BRIDGE_MARKER } : null;
}

/**
 * Deletes the network's nft table when it is ours: named after this bridge
 * (so with our prefix), whatever table the record names, and carrying our
 * comment. Returns why it was left alone, if it was.
 */
function deleteNatTable(host: HostContext, bridge: string, recorded: unknown): string | undefined {
  const table = natTableName(bridge);
  if (recorded !== undefined && recorded !== table) return `left alone: nft table ${JSON.stringify(recorded)} is not the table of NAT network '${bridge}' (${table})`;
  if (!table.startsWith(NAT_TABLE_PREFIX)) return `left alone: nft table '${table}' has no ${NAT_TABLE_PREFIX} prefix`;
  const comment = nftTableComment('ip', table, host.bin.nft);
  if (comment === undefined) return undefined; // gone already
  if (comment !== natTableComment(bridge)) return `left alone: nft table 'ip ${table}' does not carry our comment (${comment === null ? 'none' : JSON.stringify(comment)})`;
  nftDeleteTable('ip', table, host.bin.nft);
  return undefined;
}

/**
 * Removes what is left of a NAT network, in the order that keeps a crash in
 * between harmless: daemon, rules, bridge, record last. Each piece only when
 * it is ours (dnsmasq: by its command line; table: name and comment; bridge:
 * ifindex and marker); returns why pieces were left alone.
 */
export function teardownNetwork(host: HostContext, bridge: string): string[] {
  checkNatBridgeName(bridge);
  const notes: string[] = [];
  const dir = natDir(host, bridge);
  const rec = readJson<NatRecord>(recordPath(dir));
  const p = dnsmasqPaths(dir);
  stopDnsmasq(p.pidFile);
  const t = deleteNatTable(host, bridge, rec?.table);
  if (t) notes.push(t);
  const l = linkShow(bridge);
  if (l) {
    const id = bridgeIdentity(bridge, rec);
    const bad = id ? identityMismatch(l, id, ['bridge']) : `no record of a bridge '${bridge}' we made`;
    if (bad) notes.push(`left alone: ${bad}`);
    else linkDelete(bridge);
  }
  rmSync(p.hostsDir, { recursive: true, force: true });
  rmSync(p.logFile, { force: true });
  rmSync(join(dir, 'dnsmasq.start.err'), { force: true });
  rmSync(recordPath(dir), { force: true });
  return notes;
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
    const id = bridgeIdentity(o.bridge, rec);
    const bad = id ? identityMismatch(link, id, ['bridge']) : 'no ifindex recorded';
    if (bad) {
      throw new ConfigError(`'${o.bridge}' is not the bridge qemu-net-helper made for its NAT network (${bad})`, `remove it or choose another NAT bridge name; stale state is in ${o.dir}`);
    }
    const subnet = parseSubnet(rec.subnet);
    if (o.subnet && subnetToString(o.subnet) !== rec.subnet) {
      throw new ConfigError(`NAT network '${o.bridge}' already uses ${rec.subnet}, not ${subnetToString(o.subnet)}`, 'ask for the same subnet, or another bridge name for a second network');
    }
    journal();
    // Heal what a crash or an admin may have removed; never touch a healthy part.
    ensureIpForward();
    if (!nftTableExists('ip', rec.table, host.bin.nft)) nftApply(natRuleset(rec.table, o.bridge, subnet), host.bin.nft);
    if (dnsmasqPid(dnsmasqPaths(o.dir).pidFile) === null) startDnsmasq(recordedDnsmasq(rec, o.dir, o.bridge) ?? dnsmasqConfig(o, subnet), host.bin.dnsmasq);
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
  ensureDir(o.dir, 0o755);
  writeJson(recordPath(o.dir), newRec);
  try {
    ip('link', 'add', o.bridge, 'type', 'bridge');
    // Marked before its ifindex is recorded: teardown deletes only a marked bridge.
    markNewLink(o.bridge, NAT_BRIDGE_MARKER);
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
export function leaveNetwork(host: HostContext, bridge: string): string | undefined {
  return withLock(natLock(host), () => {
    if (!readJson<NatRecord>(recordPath(natDir(host, bridge)))) return undefined; // torn down already
    if (bridgePorts(bridge).length > 0) return undefined;
    const notes = teardownNetwork(host, bridge);
    return notes.length ? notes.join('; ') : undefined;
  });
}

/** Drops a guest's fixed address; dnsmasq is restarted to forget it (see writeDhcpHost). */
export function dropReservation(host: HostContext, bridge: string, mac: string): void {
  withLock(natLock(host), () => {
    const dir = natDir(host, bridge);
    if (!dhcpHosts(dir).has(mac)) return;
    removeDhcpHost(dir, mac);
    const rec = readJson<NatRecord>(recordPath(dir));
    const cfg = rec ? recordedDnsmasq(rec, dir, bridge) : undefined;
    if (cfg && dnsmasqPid(dnsmasqPaths(dir).pidFile) !== null) restartDnsmasq(cfg, host.bin.dnsmasq);
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
      rb.add(`leave NAT network ${bridge}`, () => { leaveNetwork(host, bridge); }, { backend: 'nat', obj: network });
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
      restartDnsmasq(recordedDnsmasq(rec, o.dir, bridge) ?? dnsmasqConfig(o, net), host.bin.dnsmasq);
    }

    // A persistent tap (`up`) is journaled by setupBridgeTap as {kind: 'link'} for this kernel.
    const persist = req.persist ? { persist: { backend: 'nat', marker: linkMarker(req.params, 'nat'), mark: markLink, release: (x: OwnedObject) => releaseLink(x, ['tun']) } } : {};
    const ep = setupBridgeTap({ bridge, vnetHdr: req.vnetHdr, tunDevice: host.tunDevice, ...(tapName ? { tapName } : {}), ...persist }, rb);
    if (ep.owned) owned.push(ep.owned);

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

/** The bridge an owned object names, or why it names nothing of ours (a path or table name could hide in it). */
function recordedBridge(obj: OwnedObject): string | { note: string } {
  const bridge = dataString(obj.data, 'bridge', obj.kind);
  try {
    return checkNatBridgeName(bridge);
  } catch (e) {
    return { note: `left alone: ${(e as Error).message}` };
  }
}

export function releaseNat(obj: OwnedObject, host: HostContext): string | undefined {
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
