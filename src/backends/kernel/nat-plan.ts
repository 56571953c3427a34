// What a NAT network looks like, before anything is made: its bridge and
// table names, the comment that marks its table as ours, its ruleset, and
// the subnet it takes. Pure, or read-only lookups of this namespace.
import { UsageError, ConfigError } from '../../errors.js';
import { checkInterfaceName } from '../../net/ifname.js';
import { ipJson } from '../../net/ip.js';
import { broadcastOf, firstHost, ipToNumber, numberToIp, overlaps, subnetOf, subnetToString, type Subnet } from '../../net/ipv4.js';
import { isNftIdentifier } from '../../net/nft.js';
import type { EndpointRequest } from '../types.js';
import { stringParam } from './kerrors.js';
import { MARKER_PREFIX } from './klink.js';

export const DEFAULT_NAT_BRIDGE = 'qnhnat0';
/** Where a NAT network without a configured subnet takes its /24 from. */
export const AUTO_NAT_RANGE = '10.213.0.0/16';
/** Smallest NAT network: /30 = gateway + one guest. */
export const MAX_NAT_PREFIX = 30;
export const MIN_NAT_PREFIX = 8;
export const NAT_TABLE_PREFIX = 'qemu_net_helper_';
/** ifalias of every NAT bridge we create: the network is shared, so it names no endpoint. */
export const NAT_BRIDGE_MARKER = `${MARKER_PREFIX}nat-network`;
export function natBridgeName(req: Pick<EndpointRequest, 'dev' | 'params'>): string {
  return checkNatBridgeName(stringParam(req.params, 'bridge') ?? req.dev ?? DEFAULT_NAT_BRIDGE);
}

/** A NAT bridge name: an interface name that is also safe in an nft table name and as a state directory name. */
export function checkNatBridgeName(name: string): string {
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
/** The comment our ruleset gives its table; a table without it is not ours, whatever its name. */
export function natTableComment(bridge: string): string {
  return `qemu-net-helper NAT network on bridge ${bridge}`;
}

export function natRuleset(table: string, bridge: string, subnet: Subnet): string {
  const net = subnetToString(subnet);
  const br = `"${bridge}"`;
  return [
    // add+delete first makes the whole file a replace, whether the table exists or not.
    `add table ip ${table}`,
    `delete table ip ${table}`,
    `table ip ${table} {`,
    `  comment "${natTableComment(bridge)}"`,
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
      used.push({ subnet: subnetOf(x.local, x.prefixlen), what: `${x.local}/${x.prefixlen} on ${a.ifname}` });
    }
  }
  for (const r of ipJson<{ dst: string; dev?: string }>('-4', 'route', 'show')) {
    if (!r.dst || r.dst === 'default') continue;
    const [addr, p] = r.dst.split('/');
    try {
      used.push({ subnet: subnetOf(addr!, p === undefined ? 32 : Number(p)), what: `route ${r.dst}${r.dev ? ` dev ${r.dev}` : ''}` });
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

