// Transport "veth": container networking. On a bridge (mode bridge/veb with
// dev a Linux bridge) a veth pair, one end a bridge port, the other end the
// container's interface, like the reference bridge plugin; on an Ethernet
// device (modes veb/vepa/private/passthrough, or bridge on a non-bridge) a
// macvlan in that mode, like the reference macvlan plugin.
import { randomBytes } from 'node:crypto';
import { setupVeth, OWNED_KIND as VETH_KIND } from '../backends/kernel/veth.js';
import { macvtapModeFor } from '../backends/kernel/macvtap.js';
import { kernelFailure } from '../backends/kernel/kerrors.js';
import { linkMarker, markLink, markNewLink } from '../backends/kernel/klink.js';
import { NotFoundError } from '../errors.js';
import { ip, linkDelete, linkKind, linkShow } from '../net/ip.js';
import { ifIndex } from '../sys/netdev.js';
import type { EndpointRequest } from '../backends/types.js';
import type { AddContext, Attached } from './attach-types.js';
import { configureInSandbox, moveIntoSandbox } from './move.js';
import { CNI_SANDBOX, KIND_HOST_LINK, KIND_SANDBOX_LINK, releaseSandboxObject } from '../backends/kernel/cni-sandbox.js';

export function request(ctx: AddContext): EndpointRequest {
  // endpointId: the links we make carry this attachment's marker (klink.ts), which release checks.
  const r: EndpointRequest = { mode: ctx.conf.mode, vnetHdr: false, queues: 1, params: { endpointId: ctx.id } };
  if (ctx.conf.dev) r.dev = ctx.conf.dev;
  if (ctx.conf.mtu !== undefined) r.mtu = ctx.conf.mtu;
  return r;
}

/**
 * The pair is released through its host end (the other end leaves for the
 * sandbox): marked as this attachment's and journaled with its identity.
 */
export function journalHostEnd(ctx: AddContext, hostEnd: string): { ifindex: number; marker: string } {
  const marker = linkMarker({ endpointId: ctx.id }, 'veth');
  markLink(hostEnd, marker);
  const ifindex = ifIndex(hostEnd);
  ctx.rb.add(`delete veth ${hostEnd}`, () => linkDelete(hostEnd), { backend: 'veth', obj: { kind: VETH_KIND, data: { ifname: hostEnd, ifindex, marker } } });
  return { ifindex, marker };
}

function devKind(dev: string): string {
  let l;
  try { l = linkShow(dev); } catch (e) { kernelFailure(e, `looking up '${dev}'`); }
  if (!l) throw new NotFoundError(`dev '${dev}' does not exist on the host`, 'create it, or name an existing bridge or Ethernet device in "dev"');
  return linkKind(l);
}

/** A veth pair, its host end a port of `bridge` (default: dev), the other end the container's. */
export function onBridge(ctx: AddContext, bridge: string = ctx.conf.dev!): Attached {
  const ep = setupVeth({ ...request(ctx), dev: bridge }, ctx.host, ctx.rb);
  const hostEnd = String(ep.info.hostIfname);
  journalHostEnd(ctx, hostEnd);
  moveIntoSandbox(ep.ifname, ctx.env.netns, ctx.env.ifname);
  const m = configureInSandbox(ctx.env.netns, ctx.env.ifname, ctx.mac, ctx.conf.mtu);
  const h = linkShow(hostEnd);
  const br = linkShow(bridge);
  return {
    hostInterfaces: [{ name: bridge, ...(br?.address ? { mac: br.address } : {}) }, { name: hostEnd, ...(h?.address ? { mac: h.address } : {}) }],
    sandbox: { name: ctx.env.ifname, mac: m.mac, mtu: m.mtu, sandbox: ctx.env.netns },
    configureIp: true, kernel: 'veth', hostIfname: hostEnd,
  };
}

/** A macvlan (or macvtap, for a VM in the pod) on `dev`, moved into the sandbox. */
export function macvlanInto(ctx: AddContext, kind: 'macvlan' | 'macvtap'): Attached {
  const dev = ctx.conf.dev!;
  const mode = macvtapModeFor({ mode: ctx.conf.mode, params: {} });
  const tmp = `qnhm${randomBytes(4).toString('hex')}`;
  const args = ['link', 'add', 'link', dev, 'name', tmp];
  if (ctx.conf.mtu !== undefined) args.push('mtu', String(ctx.conf.mtu));
  args.push('type', kind, 'mode', mode);
  try { ip(...args); } catch (e) { kernelFailure(e, `creating a ${kind} in mode ${mode} on '${dev}'`); }
  const marker = linkMarker({ endpointId: ctx.id }, kind);
  markNewLink(tmp, marker);
  const made = { kind: KIND_HOST_LINK, data: { ifname: tmp, ifindex: ifIndex(tmp), marker } };
  ctx.rb.add(`delete ${kind} ${tmp}`, () => releaseSandboxObject(made), { backend: CNI_SANDBOX, obj: made });
  moveIntoSandbox(tmp, ctx.env.netns, ctx.env.ifname);
  const m = configureInSandbox(ctx.env.netns, ctx.env.ifname, ctx.mac);
  // Journaled once it lives in the sandbox: DEL and gc delete it there.
  const obj = { kind: KIND_SANDBOX_LINK, data: { netns: ctx.env.netns, ifname: ctx.env.ifname, ifindex: m.ifindex, parent: dev, mode } };
  ctx.rb.add(`delete ${kind} ${ctx.env.ifname} in the sandbox`, () => releaseSandboxObject(obj), { backend: CNI_SANDBOX, obj });
  return {
    hostInterfaces: [],
    sandbox: { name: ctx.env.ifname, mac: m.mac, mtu: m.mtu, sandbox: ctx.env.netns },
    configureIp: kind === 'macvlan', kernel: kind, hostIfname: dev,
  };
}

export function attachVeth(ctx: AddContext): Attached {
  const kind = devKind(ctx.conf.dev!);
  if (kind === 'bridge' && (ctx.conf.mode === 'bridge' || ctx.conf.mode === 'veb')) return onBridge(ctx);
  if (kind === 'bridge') throw new NotFoundError(`mode '${ctx.conf.mode}' needs an Ethernet device in dev, and '${ctx.conf.dev}' is a bridge`, "use mode 'bridge' on a bridge");
  return macvlanInto(ctx, 'macvlan');
}
