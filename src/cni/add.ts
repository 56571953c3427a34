// CNI ADD through the setup tier: the config maps into the tier's request
// (request.ts), the tier checks, reaps and drafts the attachment's record
// (every object journaled into it as it is made), IPAM is asked for
// addresses, the transport wires the sandbox, and any failure undoes all of
// it, IPAM included.
import { ConfigError } from '../errors.js';
import { prepareSetup, type PreparedSetup } from '../setup/tier.js';
import type { HostContext } from '../backends/types.js';
import type { NetConf } from './config.js';
import type { CniEnv } from './env.js';
import { Ipam } from './ipam.js';
import { configureIps } from './ipconf.js';
import { chain, emptyResult, readResult, type CniResult } from './result.js';
import { requireNetns } from './sandbox.js';
import { loadAttachment } from './store.js';
import { cniRequest, type CniRequest } from './request.js';
import type { AddContext, Attached } from './attach-types.js';
import { attachVeth } from './attach-veth.js';
import { attachRouted } from './attach-route.js';
import { attachMacvtap, attachTap } from './attach-tap.js';
import { attachVf } from './attach-vf.js';
import { attachVhostUser } from './attach-vhost-user.js';
import { attachNat } from './attach-nat.js';

function attach(ctx: AddContext): Attached {
  switch (ctx.conf.transport) {
    case 'veth': return ctx.conf.mode === 'route' ? attachRouted(ctx) : ctx.conf.mode === 'nat' ? attachNat(ctx) : attachVeth(ctx);
    case 'tap': return ctx.conf.mode === 'nat' ? attachNat(ctx) : attachTap(ctx);
    case 'macvtap': return attachMacvtap(ctx);
    case 'vf': return attachVf(ctx);
    case 'vhost-user': return attachVhostUser(ctx);
  }
}

/** IPAM first, so undone last: the addresses go back once nothing uses them. Then the transport, then the sandbox's addresses. */
function realizeAttachment(r: CniRequest, conf: NetConf, env: CniEnv, raw: Record<string, unknown>, host: HostContext, s: PreparedSetup): { a: Attached; ours: CniResult } {
  let ipRes: CniResult | null = null;
  if (conf.ipam) {
    const ipam = new Ipam(conf, env, raw);
    ipRes = ipam.add();
    s.rb.add('IPAM DEL', () => ipam.del());
  }
  const ctx: AddContext = { conf, env, host, rb: s.rb, id: s.record.id, ...(r.mac ? { mac: r.mac } : {}), ...(ipRes ? { ips: ipRes.ips, routes: ipRes.routes } : {}) };
  const a = attach(ctx);
  const ours = emptyResult(conf.cniVersion);
  ours.interfaces = [...a.hostInterfaces, a.sandbox];
  const index = ours.interfaces.length - 1;
  // The transport's own addresses (mode nat) replace IPAM's answer, which it has already used.
  ours.ips = (a.ips ?? ipRes?.ips ?? []).map((i) => ({ ...i, interface: index }));
  ours.routes = a.routes ?? ipRes?.routes ?? [];
  if (ipRes) ours.dns = ipRes.dns;
  if (a.configureIp && ours.ips.length) configureIps(env.netns, env.ifname, ours.ips, ours.routes);
  if (conf.dns) ours.dns = { ...ours.dns, ...conf.dns };
  return { a, ours };
}

/** Map, prepare through the setup tier (a failure undoes all of it, IPAM included), complete the record, commit. */
export async function cmdAdd(conf: NetConf, raw: Record<string, unknown>, env: CniEnv, host: HostContext): Promise<CniResult> {
  const r = cniRequest(conf, env, raw);
  const { setup, value } = prepareSetup(r.draft, host, {
    admit: () => {
      requireNetns(env.netns);
      if (loadAttachment(host.stateDir, conf.name, env.containerId, env.ifname)) {
        throw new ConfigError(`container ${env.containerId} already has '${env.ifname}' on network '${conf.name}'`, 'a runtime must DEL before it ADDs the same attachment again');
      }
    },
    vet: () => (conf.prevResult ? readResult(conf.prevResult, 'prevResult') : null),
    realize: (s, prev) => ({ ...realizeAttachment(r, conf, env, raw, host, s), prev }),
    // The record is kept when something could not be undone, so DEL or gc can retry from it.
    undoLeft: (left) => { process.stderr.write(`qemu-net-helper: could not undo: ${left.join('; ')}\n`); },
  });
  const { a, ours, prev } = value;
  const record = setup.record;
  record.kernel = a.kernel;
  record.ifname = a.hostIfname;
  record.mac = a.sandbox.mac ?? null;
  record.mtu = a.sandbox.mtu ?? 0;
  record.info = { ...record.info, state: 'active', cni: { ...r.info, result: ours } };
  setup.commit(true);
  return chain(prev, ours);
}
