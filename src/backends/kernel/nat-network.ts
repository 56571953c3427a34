// One NAT network (bridge, nft table, dnsmasq; see nat.ts for the whole
// design) and joining it: created or healed under the NAT lock, the caller's
// port added while the lock is still held, left by its last user. Fixed
// guest addresses are dnsmasq dhcp-host reservations, which also serve as
// the address book of callers that pick an address themselves (the CNI
// plugin without IPAM): a reserved address is never leased to anyone else.
import { rmSync } from 'node:fs';
import { join } from 'node:path';
import { ConfigError, ExhaustedError, UsageError } from '../../errors.js';
import {
  dhcpHosts, dnsmasqLeases, dnsmasqPaths, dnsmasqPid, removeDhcpHost, restartDnsmasq, startDnsmasq, stopDnsmasq, writeDhcpHost, type DnsmasqConfig,
} from '../../net/dnsmasq.js';
import { ip, ipJson, linkDelete, linkShow, type LinkInfo } from '../../net/ip.js';
import {
  broadcastOf, contains, firstHost, ipToNumber, netmaskOf, numberToIp, overlaps, parseSubnet, subnetToString, type Subnet,
} from '../../net/ipv4.js';
import { nftApply, nftDeleteTable, nftTableComment, nftTableExists } from '../../net/nft.js';
import { IP_FORWARD, readSysctl, writeSysctl } from '../../net/sysctl.js';
import type { Rollback } from '../../state/rollback.js';
import { ifIndex } from '../../sys/netdev.js';
import type { EndpointRequest, HostContext, OwnedObject } from '../types.js';
import { booleanParam, kernelFailure, stringParam } from './kerrors.js';
import { identityMismatch, markNewLink, type LinkIdentity } from './klink.js';
import { ensureDir } from '../../state/atomic-file.js';
import { readJson, withLock, writeJson } from './kstate.js';
import {
  NAT_TABLE_PREFIX, NAT_BRIDGE_MARKER, MAX_NAT_PREFIX, MIN_NAT_PREFIX, natBridgeName, checkNatBridgeName, natTableName, natTableComment, natRuleset, subnetsInUse, pickDefaultSubnet, dhcpRange,
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

export interface NatOptions {
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

export function natDir(host: HostContext, bridge: string): string {
  return join(host.stateDir, 'nat', bridge);
}
function natLock(host: HostContext): string {
  return join(host.stateDir, 'nat', 'lock');
}
export function recordPath(dir: string): string {
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
function teardownNetwork(host: HostContext, bridge: string): string[] {
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


/** The network a request asks for: bridge, subnet (if fixed), DHCP settings. */
export function natOptions(req: EndpointRequest, host: HostContext): NatOptions {
  const bridge = natBridgeName(req);
  const subnetText = req.subnet ?? stringParam(req.params, 'subnet');
  const subnet = subnetText !== undefined ? parseSubnet(subnetText, { minPrefix: MIN_NAT_PREFIX, maxPrefix: MAX_NAT_PREFIX }) : undefined;
  const leaseTime = stringParam(req.params, 'leaseTime') ?? '1h';
  if (!/^(\d+[smhdw]?|infinite)$/.test(leaseTime)) throw new ConfigError(`leaseTime '${leaseTime}' is not a dnsmasq lease time`, 'write e.g. 1h, 30m, 86400 or infinite');
  return {
    bridge,
    dir: natDir(host, bridge),
    ...(subnet ? { subnet } : {}),
    leaseTime,
    dhcpPing: booleanParam(req.params, 'dhcpPing') ?? true,
    dns: parseDns(req.params.dns),
  };
}

/** A network joined: what a port added to it needs to know. */
export interface NatJoined {
  bridge: string;
  dir: string;
  rec: NatRecord;
  net: Subnet;
  created: boolean;
  /** The owned objects journaled so far (the network; reservations added by reserveAddress). */
  owned: OwnedObject[];
  options: NatOptions;
}

/**
 * Creates or reuses the network and runs `port` (which puts the caller's
 * port on the bridge) under the same lock: a concurrent last release cannot
 * remove the network between our "it exists" and our join.
 */
export function joinNetwork<T>(host: HostContext, o: NatOptions, rb: Rollback, port: (j: NatJoined) => T): T {
  return withLock(natLock(host), () => {
    const owned: OwnedObject[] = [];
    const network: OwnedObject = { kind: KIND_NAT, data: { bridge: o.bridge } };
    const { rec, created } = ensureNetwork(host, o, () => {
      // Undo = leaving: the network goes again if nobody else is on it.
      rb.add(`leave NAT network ${o.bridge}`, () => { leaveNetwork(host, o.bridge); }, { backend: 'nat', obj: network });
      owned.push(network);
    });
    return port({ bridge: o.bridge, dir: o.dir, rec, net: parseSubnet(rec.subnet), created, owned, options: o });
  });
}

/**
 * Reserves `address` for `mac` (formatted, lower case) in the network's
 * DHCP; journaled, so release drops it. Call inside joinNetwork.
 */
export function reserveAddress(host: HostContext, j: NatJoined, rb: Rollback, mac: string, address: string): void {
  const g = ipToNumber(address);
  const net = j.net;
  if (!contains(net, g) || g === net.network || g === broadcastOf(net) || g === firstHost(net)) {
    throw new UsageError(`guest address ${address} is not a guest address of NAT network ${j.rec.subnet}`, `choose one in ${dhcpRange(net).start}-${dhcpRange(net).end}`);
  }
  const taken = [...dhcpHosts(j.dir)].find(([m, a]) => a === address && m !== mac);
  if (taken) throw new ConfigError(`guest address ${address} is reserved for ${taken[0]} on NAT network '${j.bridge}'`, 'give each guest its own address');
  const reservation: OwnedObject = { kind: KIND_RESERVATION, data: { bridge: j.bridge, mac, ip: address } };
  rb.add(`drop reservation ${mac}`, () => dropReservation(host, j.bridge, mac), { backend: 'nat', obj: reservation });
  j.owned.push(reservation);
  writeDhcpHost(j.dir, mac, address);
  // dnsmasq learns fixed addresses only when it starts: restart it (leases are kept in its lease file).
  restartDnsmasq(recordedDnsmasq(j.rec, j.dir, j.bridge) ?? dnsmasqConfig(j.options, net), host.bin.dnsmasq);
}

/**
 * The lowest address of the DHCP range that is neither reserved nor leased:
 * for a caller that picks its own address (then reserves it). Call inside
 * joinNetwork, so two callers cannot pick the same one.
 */
export function freeAddress(j: NatJoined): string {
  const used = new Set([...dhcpHosts(j.dir).values(), ...dnsmasqLeases(j.dir).map((l) => l.ip)]);
  const { start, end } = dhcpRange(j.net);
  for (let n = ipToNumber(start); n <= ipToNumber(end); n++) {
    const a = numberToIp(n);
    if (!used.has(a)) return a;
  }
  throw new ExhaustedError(`NAT network '${j.bridge}' (${j.rec.subnet}) has no free address left`, 'use a larger subnet, or another NAT network (dev)');
}
