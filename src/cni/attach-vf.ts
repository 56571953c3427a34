// Transport "vf": a VF claimed through the helper's own SR-IOV kernel
// implementation (same claim files, same saved-settings record: a VF given to
// a pod is never given to a VM and the other way round), then moved into the
// sandbox as CNI_IFNAME. DEL moves it back under its host name first, then
// the sriov release puts its MAC/VLAN back and drops the claim.
import { sriovBackend } from '../backends/kernel/sriov.js';
import { parseMac } from '../net/mac.js';
import type { EndpointRequest } from '../backends/types.js';
import type { AddContext, Attached } from './attach-types.js';
import { configureInSandbox, moveIntoSandbox } from './move.js';
import { CNI_SANDBOX, KIND_RETURN_LINK, releaseSandboxObject } from '../backends/kernel/cni-sandbox.js';

export function attachVf(ctx: AddContext): Attached {
  // The claim lives as long as the attachment, not as a process: its owner
  // is pid 1, which never goes, so neither the helper's gc nor a claimant
  // ever takes it as stale; DEL (or CNI GC) releases it.
  const req: EndpointRequest = { mode: 'passthrough', vnetHdr: false, queues: 1, params: { ownerPid: 1, endpointId: ctx.id } };
  if (ctx.conf.dev) req.dev = ctx.conf.dev;
  if (ctx.conf.vfPool) req.vfPool = ctx.conf.vfPool;
  if (ctx.conf.vlan !== undefined) req.vlan = ctx.conf.vlan;
  if (ctx.mac) req.mac = parseMac(ctx.mac)!;
  const ep = sriovBackend.setup(req, ctx.host, ctx.rb);
  const hostName = ep.ifname;
  moveIntoSandbox(hostName, ctx.env.netns, ctx.env.ifname);
  const m = configureInSandbox(ctx.env.netns, ctx.env.ifname, undefined, ctx.conf.mtu);
  const obj = { kind: KIND_RETURN_LINK, data: { netns: ctx.env.netns, ifname: ctx.env.ifname, ifindex: m.ifindex, hostIfname: hostName, pci: String(ep.info.pci) } };
  ctx.rb.add(`move VF ${ctx.env.ifname} back from the sandbox`, () => releaseSandboxObject(obj), { backend: CNI_SANDBOX, obj });
  return {
    hostInterfaces: [],
    sandbox: { name: ctx.env.ifname, mac: m.mac, mtu: m.mtu, sandbox: ctx.env.netns, pciID: String(ep.info.pci) },
    configureIp: true, kernel: 'sriov', hostIfname: hostName,
  };
}
