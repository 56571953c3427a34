// Transports for a VM in the pod: "tap" makes a persistent tap named
// CNI_IFNAME inside the sandbox (owner/group settable, so an unprivileged
// QEMU in the pod may open it by name), joined to the host bridge `dev`
// through a veth pair and a small bridge inside the sandbox (the layout
// KubeVirt's bridge binding builds); without `dev`, the tap alone, for a
// chained plugin to wire. "macvtap" is a macvtap on `dev` moved into the
// sandbox (what KubeVirt's macvtap-cni does); its /dev/tapN stays the host's.
import { randomBytes } from 'node:crypto';
import { setupVeth } from '../backends/kernel/veth.js';
import { kernelFailure } from '../backends/kernel/kerrors.js';
import { ConfigError, SetupError } from '../errors.js';
import { linkShow } from '../net/ip.js';
import type { AddContext, Attached } from './attach-types.js';
import { journalHostEnd, macvlanInto, request } from './attach-veth.js';
import { configureInSandbox, moveIntoSandbox } from './move.js';
import { CNI_SANDBOX, KIND_SANDBOX_LINK, releaseSandboxObject } from '../backends/kernel/cni-sandbox.js';
import { sip, sLink } from '../net/netns-ip.js';
import type { CniInterface } from './result.js';

function journalSandboxLink(ctx: AddContext, name: string, what: string): number {
  const l = sLink(ctx.env.netns, name);
  if (!l) throw new SetupError(`${what} '${name}' is missing in ${ctx.env.netns} right after it was made`);
  const obj = { kind: KIND_SANDBOX_LINK, data: { netns: ctx.env.netns, ifname: name, ifindex: l.ifindex } };
  ctx.rb.add(`delete ${what} ${name} in the sandbox`, () => releaseSandboxObject(obj), { backend: CNI_SANDBOX, obj });
  return l.ifindex;
}

/** `bridge`: the host bridge to join (default: dev). The tap takes ctx.mac. */
export function attachTap(ctx: AddContext, bridge: string | undefined = ctx.conf.dev): Attached {
  const { netns, ifname } = ctx.env;
  if (sLink(netns, ifname)) throw new ConfigError(`an interface named '${ifname}' already exists in ${netns}`);
  const args = ['tuntap', 'add', 'dev', ifname, 'mode', 'tap', 'vnet_hdr'];
  if (ctx.conf.owner !== undefined) args.push('user', String(ctx.conf.owner));
  if (ctx.conf.group !== undefined) args.push('group', String(ctx.conf.group));
  try { sip(netns, ...args); } catch (e) { kernelFailure(e, `creating tap '${ifname}' in ${netns}`); }
  journalSandboxLink(ctx, ifname, 'tap');
  const hostInterfaces: CniInterface[] = [];
  let hostIfname = '';
  if (bridge) {
    const tag = randomBytes(3).toString('hex');
    const port = `qnhp${tag}`;
    const br = `qnhb${tag}`;
    const ep = setupVeth({ ...request(ctx), dev: bridge }, ctx.host, ctx.rb);
    hostIfname = String(ep.info.hostIfname);
    const hostEnd = hostIfname;
    journalHostEnd(ctx, hostEnd);
    moveIntoSandbox(ep.ifname, netns, port);
    try {
      sip(netns, 'link', 'add', br, 'type', 'bridge');
      journalSandboxLink(ctx, br, 'bridge');
      sip(netns, 'link', 'set', 'dev', port, 'master', br, 'up');
      sip(netns, 'link', 'set', 'dev', ifname, 'master', br);
      sip(netns, 'link', 'set', 'dev', br, 'up');
    } catch (e) {
      kernelFailure(e, `bridging tap '${ifname}' to the host in ${netns}`);
    }
    const h = linkShow(hostEnd);
    hostInterfaces.push({ name: bridge }, { name: hostEnd, ...(h?.address ? { mac: h.address } : {}) });
    const b = sLink(netns, br);
    hostInterfaces.push({ name: br, ...(b?.address ? { mac: b.address } : {}), sandbox: netns });
  }
  const m = configureInSandbox(netns, ifname, ctx.mac, ctx.conf.mtu);
  return { hostInterfaces, sandbox: { name: ifname, mac: m.mac, mtu: m.mtu, sandbox: netns }, configureIp: false, kernel: bridge ? 'veth' : 'tap', hostIfname };
}

export function attachMacvtap(ctx: AddContext): Attached {
  return macvlanInto(ctx, 'macvtap');
}
