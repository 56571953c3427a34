// CNI results: the 1.1 shape we build internally, reading a result of any
// supported version (prevResult, an IPAM plugin's answer), chaining ours onto
// a previous one, and writing it in the version the runtime asked for.
import { CniCode, CniError } from './errors.js';
import { compareVersions } from './version.js';

export interface CniInterface { name: string; mac?: string; mtu?: number; sandbox?: string; socketPath?: string; pciID?: string }
export interface CniIp { address: string; gateway?: string; interface?: number }
export interface CniRoute { dst: string; gw?: string; mtu?: number; advmss?: number; priority?: number; table?: number; scope?: number }
export interface CniDns { nameservers?: string[]; domain?: string; search?: string[]; options?: string[] }
export interface CniResult { cniVersion: string; interfaces: CniInterface[]; ips: CniIp[]; routes: CniRoute[]; dns: CniDns }

export function emptyResult(cniVersion: string): CniResult {
  return { cniVersion, interfaces: [], ips: [], routes: [], dns: {} };
}

const isObj = (v: unknown): v is Record<string, unknown> => typeof v === 'object' && v !== null && !Array.isArray(v);
const str = (v: unknown): string | undefined => (typeof v === 'string' ? v : undefined);
const int = (v: unknown): number | undefined => (typeof v === 'number' && Number.isInteger(v) ? v : undefined);
const strs = (v: unknown): string[] | undefined => (Array.isArray(v) && v.every((x) => typeof x === 'string') ? v : undefined);

function put<T extends object, K extends keyof T>(o: T, k: K, v: T[K] | undefined): void {
  if (v !== undefined) o[k] = v;
}

/** Reads a result of any version we support (0.3.x/0.4.0 carry ips[].version; 1.x does not). */
export function readResult(v: unknown, what: string): CniResult {
  if (!isObj(v)) throw new CniError(CniCode.DECODE_FAILURE, `${what} is not a JSON object`);
  const out = emptyResult(str(v.cniVersion) ?? '1.1.0');
  if (Array.isArray(v.interfaces)) {
    for (const i of v.interfaces) {
      if (!isObj(i) || typeof i.name !== 'string') throw new CniError(CniCode.DECODE_FAILURE, `${what}: an interface has no name`);
      const x: CniInterface = { name: i.name };
      put(x, 'mac', str(i.mac)); put(x, 'mtu', int(i.mtu)); put(x, 'sandbox', str(i.sandbox));
      put(x, 'socketPath', str(i.socketPath)); put(x, 'pciID', str(i.pciID));
      out.interfaces.push(x);
    }
  }
  if (Array.isArray(v.ips)) {
    for (const i of v.ips) {
      if (!isObj(i) || typeof i.address !== 'string') throw new CniError(CniCode.DECODE_FAILURE, `${what}: an ip has no address`);
      const x: CniIp = { address: i.address };
      put(x, 'gateway', str(i.gateway)); put(x, 'interface', int(i.interface));
      out.ips.push(x);
    }
  }
  if (Array.isArray(v.routes)) {
    for (const r of v.routes) {
      if (!isObj(r) || typeof r.dst !== 'string') throw new CniError(CniCode.DECODE_FAILURE, `${what}: a route has no dst`);
      const x: CniRoute = { dst: r.dst };
      put(x, 'gw', str(r.gw));
      for (const k of ['mtu', 'advmss', 'priority', 'table', 'scope'] as const) put(x, k, int(r[k]));
      out.routes.push(x);
    }
  }
  if (isObj(v.dns)) {
    put(out.dns, 'nameservers', strs(v.dns.nameservers)); put(out.dns, 'domain', str(v.dns.domain));
    put(out.dns, 'search', strs(v.dns.search)); put(out.dns, 'options', strs(v.dns.options));
  }
  return out;
}

/** Appends our interfaces/ips (their interface indexes shifted) and routes to a previous result. */
export function chain(prev: CniResult | null, ours: CniResult): CniResult {
  if (!prev) return ours;
  const shift = prev.interfaces.length;
  const dns = { ...prev.dns };
  for (const k of ['nameservers', 'search', 'options'] as const) {
    const merged = [...(prev.dns[k] ?? []), ...(ours.dns[k] ?? [])];
    if (merged.length) dns[k] = [...new Set(merged)];
  }
  if (ours.dns.domain) dns.domain = ours.dns.domain;
  return {
    cniVersion: ours.cniVersion,
    interfaces: [...prev.interfaces, ...ours.interfaces],
    ips: [...prev.ips, ...ours.ips.map((i) => (i.interface === undefined ? i : { ...i, interface: i.interface + shift }))],
    routes: [...prev.routes, ...ours.routes],
    dns,
  };
}

export function ipFamily(address: string): '4' | '6' {
  return address.includes(':') ? '6' : '4';
}

/** The result as JSON of `version`: 1.1 fields dropped before 1.1, ips[].version added before 1.0. */
export function writeResult(r: CniResult, version: string): Record<string, unknown> {
  const v11 = compareVersions(version, '1.1.0') >= 0;
  const v10 = compareVersions(version, '1.0.0') >= 0;
  const interfaces = r.interfaces.map((i) => {
    if (v11) return i;
    const { mtu: _m, socketPath: _s, pciID: _p, ...rest } = i;
    return rest;
  });
  const ips = r.ips.map((i) => (v10 ? i : { version: ipFamily(i.address), ...i }));
  const routes = r.routes.map((x) => (v11 ? x : { dst: x.dst, ...(x.gw ? { gw: x.gw } : {}) }));
  const out: Record<string, unknown> = { cniVersion: version, interfaces, ips };
  if (routes.length) out.routes = routes;
  if (Object.keys(r.dns).length) out.dns = r.dns;
  return out;
}
