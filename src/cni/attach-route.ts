// Mode "route" over veth: the helper's routed mode for a container. A veth
// pair on no bridge; the host routes each of the container's IPv4 addresses
// to its host end (a /32, proto 213 like the helper's routes), the host end
// answers the container's ARP for anything (proxy ARP, so its gateway may be
// any address), and the uplink `dev` answers ARP for the container on the LAN
// (shared, restored after the last user: src/backends/kernel/route.ts).
import { setupVeth } from '../backends/kernel/veth.js';
import { KIND_ROUTE, KIND_UPLINK, releaseRoute, ROUTE_PROTO, uplinkAcquire } from '../backends/kernel/route.js';
import { ipReason, kernelFailure } from '../backends/kernel/kerrors.js';
import type { OwnedObject } from '../backends/types.js';
import { ConfigError, NotFoundError } from '../errors.js';
import { ip, IpError, linkShow } from '../net/ip.js';
import { ipv4ConfPath, writeSysctl } from '../net/sysctl.js';
import type { AddContext, Attached } from './attach-types.js';
import { journalHostEnd, request } from './attach-veth.js';
import { configureInSandbox, moveIntoSandbox } from './move.js';
import { ipFamily } from './result.js';

export function attachRouted(ctx: AddContext): Attached {
  const uplink = ctx.conf.dev!;
  if (!linkShow(uplink)) throw new NotFoundError(`dev '${uplink}' does not exist on the host`, 'name the uplink the container is routed through');
  const v4 = (ctx.ips ?? []).filter((a) => ipFamily(a.address) === '4');
  if (!v4.length) throw new ConfigError("mode 'route' needs an IPv4 address from IPAM", 'add an "ipam" section (e.g. host-local with a range of the uplink\'s subnet)');
  // No dev for the pair itself: its host end stays alone (dev is the uplink here).
  const { dev: _uplink, ...req } = request(ctx);
  const ep = setupVeth({ ...req, mode: 'route' }, ctx.host, ctx.rb);
  const hostEnd = String(ep.info.hostIfname);
  const { ifindex: hostIndex, marker } = journalHostEnd(ctx, hostEnd);
  moveIntoSandbox(ep.ifname, ctx.env.netns, ctx.env.ifname);
  const m = configureInSandbox(ctx.env.netns, ctx.env.ifname, ctx.mac, ctx.conf.mtu);
  try {
    // Both die with the host end.
    writeSysctl(ipv4ConfPath(hostEnd, 'proxy_arp'), '1');
    writeSysctl(ipv4ConfPath(hostEnd, 'forwarding'), '1');
  } catch (e) {
    kernelFailure(e, `enabling proxy ARP on ${hostEnd}`);
  }
  for (const a of v4) {
    const dst = `${a.address.split('/')[0]}/32`;
    try {
      ip('route', 'add', dst, 'dev', hostEnd, 'proto', ROUTE_PROTO, 'scope', 'link');
    } catch (e) {
      if (e instanceof IpError && /File exists/i.test(ipReason(e))) throw new ConfigError(`there already is a host route for ${dst}`, 'is another container or guest using this address?');
      kernelFailure(e, `adding route ${dst} dev ${hostEnd}`);
    }
    const route: OwnedObject = { kind: KIND_ROUTE, data: { dst, dev: hostEnd, ifindex: hostIndex, marker } };
    ctx.rb.add(`delete route ${dst}`, () => { releaseRoute(route, ctx.host); }, { backend: 'route', obj: route });
  }
  // Journaled before the change, as the helper's route mode does.
  const proxy: OwnedObject = { kind: KIND_UPLINK, data: { uplink, tap: hostEnd, tapIndex: hostIndex, marker } };
  ctx.rb.add(`proxy ARP on ${uplink}`, () => { releaseRoute(proxy, ctx.host); }, { backend: 'route', obj: proxy });
  uplinkAcquire(ctx.host, uplink, { tap: hostEnd, tapIndex: hostIndex, guestIp: v4[0]!.address.split('/')[0]! });
  const h = linkShow(hostEnd);
  return {
    hostInterfaces: [{ name: hostEnd, ...(h?.address ? { mac: h.address } : {}) }],
    sandbox: { name: ctx.env.ifname, mac: m.mac, mtu: m.mtu, sandbox: ctx.env.netns },
    configureIp: true, kernel: 'route', hostIfname: hostEnd,
  };
}
