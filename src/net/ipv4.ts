// IPv4 addresses and subnets as 32-bit numbers: just enough arithmetic for the
// NAT network (gateway, DHCP range, overlap checks), the routed kernel and the
// ACL's subnet rules. Parsing and masks come from ipaddr.js, which speaks IPv6
// as well: the ground IPv6 NAT will build on.
import ipaddr from 'ipaddr.js';
import { UsageError } from '../errors.js';

const { IPv4 } = ipaddr;

export interface Subnet {
  /** Network address as an unsigned 32-bit number. */
  network: number;
  prefix: number;
}

/** Only a.b.c.d in decimal: ipaddr.js would also take 10.1 or 0x0a.0.0.1, which no one means. */
const isDotted = (ip: string): boolean => IPv4.isValidFourPartDecimal(ip);
const toNumber = (a: ipaddr.IPv4): number => a.toByteArray().reduce((n, b) => n * 256 + b, 0);
const toAddr = (n: number): ipaddr.IPv4 => IPv4.parse(numberToIp(n));

export function ipToNumber(ip: string): number {
  if (!isDotted(ip)) throw new UsageError(`'${ip}' is not an IPv4 address`, 'write it as four decimal numbers, e.g. 10.0.0.5');
  return toNumber(IPv4.parse(ip));
}

export function numberToIp(n: number): string {
  return [n >>> 24, (n >>> 16) & 255, (n >>> 8) & 255, n & 255].join('.');
}

export function maskOf(prefix: number): number {
  return toNumber(IPv4.subnetMaskFromPrefixLength(prefix));
}

/** The subnet `ip/prefix` lies in (host bits cleared): an interface address's or a route's network. */
export function subnetOf(ip: string, prefix: number): Subnet {
  if (!isDotted(ip)) throw new UsageError(`'${ip}' is not an IPv4 address`, 'write it as four decimal numbers, e.g. 10.0.0.5');
  return { network: toNumber(IPv4.networkAddressFromCIDR(`${ip}/${prefix}`)), prefix };
}

/** "a.b.c.d/p" (host bits allowed and cleared) -> its subnet; null when it is not one. */
export function cidrOrNull(text: string): Subnet | null {
  const m = /^([0-9.]+)\/(\d{1,2})$/.exec(text);
  if (!m || !isDotted(m[1]!) || Number(m[2]) > 32) return null;
  return subnetOf(m[1]!, Number(m[2]));
}

/** Whether all of `inner` lies in `outer`. */
export function within(inner: Subnet, outer: Subnet): boolean {
  return inner.prefix >= outer.prefix && contains(outer, inner.network);
}

export function subnetToString(s: Subnet): string {
  return `${numberToIp(s.network)}/${s.prefix}`;
}

/**
 * Parses "a.b.c.d/p". Host bits must be zero (a typo such as 10.0.0.1/24 for
 * 10.0.0.0/24 is refused rather than guessed). `minPrefix`/`maxPrefix` bound
 * the size: a NAT network needs room for a gateway and at least one guest.
 */
export function parseSubnet(text: string, opts: { minPrefix?: number; maxPrefix?: number; what?: string } = {}): Subnet {
  const what = opts.what ?? 'subnet';
  const m = /^(\d{1,3}(?:\.\d{1,3}){3})\/(\d{1,2})$/.exec(text.trim());
  if (!m || !isDotted(m[1]!)) {
    throw new UsageError(`${what} '${text}' is not an IPv4 CIDR`, 'write it as address/prefix, e.g. 10.213.0.0/24');
  }
  const prefix = Number(m[2]);
  const min = opts.minPrefix ?? 0;
  const max = opts.maxPrefix ?? 32;
  if (prefix < min || prefix > max) {
    throw new UsageError(`${what} '${text}' has prefix /${prefix}; it must be between /${min} and /${max}`, `choose a prefix in /${min}../${max}, e.g. /24`);
  }
  const addr = ipToNumber(m[1]!);
  const { network } = subnetOf(m[1]!, prefix);
  if (network !== addr) {
    throw new UsageError(`${what} '${text}' has host bits set`, `did you mean ${numberToIp(network)}/${prefix}?`);
  }
  return { network, prefix };
}

export function broadcastOf(s: Subnet): number {
  return toNumber(IPv4.broadcastAddressFromCIDR(subnetToString(s)));
}

export function contains(s: Subnet, ip: number): boolean {
  return toAddr(ip).match(toAddr(s.network), s.prefix);
}

export function overlaps(a: Subnet, b: Subnet): boolean {
  return toAddr(a.network).match(toAddr(b.network), Math.min(a.prefix, b.prefix));
}

/** The first usable address (the gateway of a NAT network). */
export function firstHost(s: Subnet): number {
  return s.network + 1;
}

/** Dotted netmask, e.g. 255.255.255.0 for /24. */
export function netmaskOf(prefix: number): string {
  return numberToIp(maskOf(prefix));
}
