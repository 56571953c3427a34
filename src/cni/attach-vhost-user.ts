// Transport "vhost-user": a port on the running vhost-user switch (`vhost-user
// serve --control PATH`), asked for through the helper's own "vswitch"
// kernel implementation, so the port is an owned object like any other and
// goes with DEL, `down` or gc. Nothing is made in the sandbox: the pod's VM
// (QEMU with -chardev socket,path=...) connects to `socketPath` of the result.
// The port belongs to the config's `owner`/`group` (the pod's unprivileged
// QEMU), else to us (root): only its owner's front-end (or root's) may connect.
import { vswitchBackend } from '../backends/kernel/vswitch.js';
import type { EndpointRequest } from '../backends/types.js';
import { parseMac } from '../net/mac.js';
import { parseOwnerSpec } from '../vhost-user/tenancy.js';
import type { AddContext, Attached } from './attach-types.js';

/** The uid's primary group from its account, or a group of the same number when it has none (as container uids often do). */
function primaryGid(uid: number): number {
  try { return parseOwnerSpec(String(uid), 'owner').gid; } catch { return uid; }
}

export function attachVhostUser(ctx: AddContext): Attached {
  const uid = ctx.conf.owner ?? process.geteuid?.() ?? 0;
  const gid = ctx.conf.group ?? (ctx.conf.owner !== undefined ? primaryGid(ctx.conf.owner) : process.getegid?.() ?? 0);
  const req: EndpointRequest = { mode: ctx.conf.mode, vnetHdr: true, queues: 1, params: { endpointId: ctx.id, ownerUid: uid, ownerGid: gid } };
  if (ctx.mac) req.mac = parseMac(ctx.mac)!;
  if (ctx.conf.mtu !== undefined) req.mtu = ctx.conf.mtu;
  const ep = vswitchBackend.setup(req, ctx.host, ctx.rb);
  return {
    hostInterfaces: [],
    sandbox: {
      name: ctx.env.ifname, ...(ep.mac ? { mac: ep.mac } : {}), mtu: ep.mtu, sandbox: ctx.env.netns, socketPath: String(ep.info.socket),
    },
    configureIp: false, kernel: 'vswitch', hostIfname: ep.ifname,
  };
}
