// Putting IPAM's addresses and routes on the sandbox interface (what the
// reference plugins' ConfigureIface does), and checking they are still there.
import { kernelFailure } from '../backends/kernel/kerrors.js';
import { SetupError } from '../errors.js';
import type { CniIp, CniRoute } from './result.js';
import { ipFamily } from './result.js';
import { sAddrs, sip } from '../net/netns-ip.js';

/** IPAM's addresses and routes put on `ifname` inside the sandbox. */
export function configureIps(netns: string, ifname: string, ips: CniIp[], routes: CniRoute[]): void {
  try {
    for (const a of ips) sip(netns, 'addr', 'add', a.address, 'dev', ifname);
    for (const r of routes) {
      // A route without gw goes through the gateway of its family, as the reference plugins do.
      const gw = r.gw ?? ips.find((a) => a.gateway && ipFamily(a.gateway) === ipFamily(r.dst))?.gateway;
      const args = ['route', 'add', r.dst];
      if (gw) args.push('via', gw);
      args.push('dev', ifname);
      if (r.mtu) args.push('mtu', String(r.mtu));
      if (r.advmss) args.push('advmss', String(r.advmss));
      if (r.priority !== undefined) args.push('metric', String(r.priority));
      if (r.table !== undefined) args.push('table', String(r.table));
      sip(netns, ...args);
    }
  } catch (e) {
    kernelFailure(e, `configuring addresses on '${ifname}' in ${netns}`);
  }
}

/** Throws when an address the result names is no longer on the interface. */
export function checkIps(netns: string, ifname: string, ips: CniIp[]): void {
  const have = new Set(sAddrs(netns, ifname).map((a) => `${a.local}/${a.prefixlen}`));
  for (const a of ips) {
    if (!have.has(a.address)) throw new SetupError(`address ${a.address} is missing on '${ifname}' in ${netns}`);
  }
}
