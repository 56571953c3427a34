// Mode "nat": the helper's own NAT network (src/backends/kernel/nat-network.ts:
// a bridge of its own, nftables masquerade, dnsmasq) joined by a container
// (transport veth: a pair, its host end a port of the NAT bridge) or by a VM
// in the pod (transport tap: the tap transport's layout, onto the NAT bridge).
// The address is IPAM's when there is an ipam section (it must lie in the
// NAT subnet, whose first address, the bridge's, is the gateway), else the
// NAT network's own: the lowest free address of its DHCP range. Either way it
// is reserved in the network's DHCP for the interface's MAC (the guest's,
// for a tap), so no VM on the same network is leased it, and a guest in the
// pod gets exactly the reported address by DHCP.
import { freeAddress, joinNetwork, natOptions, reserveAddress } from '../backends/kernel/nat-network.js';
import type { EndpointRequest } from '../backends/types.js';
import { ConfigError } from '../errors.js';
import { contains, ipToNumber, subnetOf, subnetToString } from '../net/ipv4.js';
import { formatMac, parseGuestMac } from '../net/mac.js';
import type { AddContext, Attached } from './attach-types.js';
import { attachTap } from './attach-tap.js';
import { onBridge } from './attach-veth.js';
import { ipFamily, type CniRoute } from './result.js';

const DEFAULT_V4 = '0.0.0.0/0';

/** The network (a.b.c.d/len) an IPAM address lies in, for a NAT network that must hold it. */
function networkOf(cidr: string): string {
  const [a, p] = cidr.split('/');
  return subnetToString(subnetOf(a!, Number(p)));
}

export function attachNat(ctx: AddContext): Attached {
  const ips = ctx.ips ?? [];
  const v4 = ips.filter((i) => ipFamily(i.address) === '4');
  if (v4.length !== ips.length || v4.length > 1) {
    throw new ConfigError(`field 'ipam': mode 'nat' takes one IPv4 address, IPAM gave ${ips.map((i) => i.address).join(', ')}`, 'give the IPAM plugin one IPv4 range: the NAT network is IPv4 only');
  }
  const given = v4[0];
  const subnet = ctx.conf.subnet ?? (given ? networkOf(given.address) : undefined);
  // Handed to the network's DHCP too (when this ADD creates it), so a guest in the pod learns them.
  const dns = (ctx.conf.dns?.nameservers ?? []).filter((n) => ipFamily(n) === '4');
  const req: EndpointRequest = {
    mode: 'nat', vnetHdr: false, queues: 1,
    params: { endpointId: ctx.id, ...(dns.length ? { dns } : {}) },
    ...(ctx.conf.dev ? { dev: ctx.conf.dev } : {}),
    ...(subnet ? { subnet } : {}),
  };
  const o = natOptions(req, ctx.host);
  return joinNetwork(ctx.host, o, ctx.rb, (j) => {
    const gateway = j.rec.gateway;
    let address: string;
    if (given) {
      const [a, p] = given.address.split('/');
      if (!contains(j.net, ipToNumber(a!)) || Number(p) !== j.net.prefix) {
        throw new ConfigError(`field 'ipam': IPAM's address ${given.address} is not in NAT network '${j.bridge}' (${j.rec.subnet})`, 'give the IPAM plugin the NAT subnet, or name another NAT bridge in dev');
      }
      if (given.gateway && given.gateway !== gateway) {
        throw new ConfigError(`field 'ipam.gateway': ${given.gateway} is not the gateway of NAT network '${j.bridge}' (${gateway}, its bridge)`, `drop the gateway from ipam, or set it to ${gateway}`);
      }
      address = a!;
    } else {
      address = freeAddress(j);
    }
    const tap = ctx.conf.transport === 'tap';
    // The tap keeps a MAC of its own: mac is the guest's, and a bridge port holding it would swallow the guest's frames.
    const a = tap ? attachTap({ ...ctx, mac: undefined }, j.bridge) : onBridge(ctx, j.bridge);
    // config.ts requires mac for a tap: the guest's, not the tap's.
    const mac = formatMac(parseGuestMac(tap ? ctx.mac! : a.sandbox.mac!, tap ? 'mac' : 'container MAC'));
    reserveAddress(ctx.host, j, ctx.rb, mac, address);
    const routes: CniRoute[] = (ctx.routes ?? []).map((r) => (r.dst === DEFAULT_V4 && !r.gw ? { ...r, gw: gateway } : r));
    if (!routes.some((r) => r.dst === DEFAULT_V4)) routes.push({ dst: DEFAULT_V4, gw: gateway });
    return { ...a, kernel: 'nat', ips: [{ address: `${address}/${j.net.prefix}`, gateway }], routes };
  });
}
