// IPv4 addresses and subnets as 32-bit numbers: just enough arithmetic for the
// NAT network (gateway, DHCP range, overlap checks) and the routed kernel.
import { isIPv4 } from 'node:net';
import { UsageError } from '../errors.js';

export interface Subnet {
  /** Network address as an unsigned 32-bit number. */
  network: number;
  prefix: number;
}

export function ipToNumber(ip: string): number {
  if (!isIPv4(ip)) throw new UsageError(`'${ip}' is not an IPv4 address`, 'write it as four decimal numbers, e.g. 10.0.0.5');
  return ip.split('.').reduce((n, part) => n * 256 + Number(part), 0);
}

export function numberToIp(n: number): string {
  return [n >>> 24, (n >>> 16) & 255, (n >>> 8) & 255, n & 255].join('.');
}

export function maskOf(prefix: number): number {
  return prefix === 0 ? 0 : (0xffffffff << (32 - prefix)) >>> 0;
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
  if (!m || !isIPv4(m[1]!)) {
    throw new UsageError(`${what} '${text}' is not an IPv4 CIDR`, 'write it as address/prefix, e.g. 10.213.0.0/24');
  }
  const prefix = Number(m[2]);
  const min = opts.minPrefix ?? 0;
  const max = opts.maxPrefix ?? 32;
  if (prefix < min || prefix > max) {
    throw new UsageError(`${what} '${text}' has prefix /${prefix}; it must be between /${min} and /${max}`, `choose a prefix in /${min}../${max}, e.g. /24`);
  }
  const addr = ipToNumber(m[1]!);
  const network = (addr & maskOf(prefix)) >>> 0;
  if (network !== addr) {
    throw new UsageError(`${what} '${text}' has host bits set`, `did you mean ${numberToIp(network)}/${prefix}?`);
  }
  return { network, prefix };
}

export function broadcastOf(s: Subnet): number {
  return (s.network | (~maskOf(s.prefix) >>> 0)) >>> 0;
}

export function contains(s: Subnet, ip: number): boolean {
  return ((ip & maskOf(s.prefix)) >>> 0) === s.network;
}

export function overlaps(a: Subnet, b: Subnet): boolean {
  const p = Math.min(a.prefix, b.prefix);
  return ((a.network & maskOf(p)) >>> 0) === ((b.network & maskOf(p)) >>> 0);
}

/** The first usable address (the gateway of a NAT network). */
export function firstHost(s: Subnet): number {
  return s.network + 1;
}

/** Dotted netmask, e.g. 255.255.255.0 for /24. */
export function netmaskOf(prefix: number): string {
  return numberToIp(maskOf(prefix));
}
