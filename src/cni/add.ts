// CNI ADD through the setup tier: the attachment's record is drafted first
// (every object journaled into it as it is made), IPAM is asked for
// addresses, the transport wires the sandbox, and any failure undoes all of
// it, IPAM included.
import { ConfigError } from '../errors.js';
import { draftRecord } from '../lifecycle/record.js';
import { PreparedSetup } from '../setup/tier.js';
import { reapConflicting, wantedBy } from '../lifecycle/reap.js';
import type { HostContext } from '../backends/types.js';
import type { NetConf } from './config.js';
import type { CniEnv } from './env.js';
import { Ipam } from './ipam.js';
import { configureIps } from './ipconf.js';
import { chain, emptyResult, readResult, type CniResult } from './result.js';
import { requireNetns } from './sandbox.js';
import { attachmentId, loadAttachment, type CniInfo } from './store.js';
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

function confWithoutPrev(raw: Record<string, unknown>): Record<string, unknown> {
  const { prevResult: _p, ...rest } = raw;
  return rest;
}

export async function cmdAdd(conf: NetConf, raw: Record<string, unknown>, env: CniEnv, host: HostContext): Promise<CniResult> {
  requireNetns(env.netns);
  if (loadAttachment(host.stateDir, conf.name, env.containerId, env.ifname)) {
    throw new ConfigError(`container ${env.containerId} already has '${env.ifname}' on network '${conf.name}'`, 'a runtime must DEL before it ADDs the same attachment again');
  }
  reapConflicting(wantedBy({ dev: conf.dev, mac: conf.runtimeConfig?.mac ?? conf.mac, vfPool: conf.vfPool }), host);
  const prev = conf.prevResult ? readResult(conf.prevResult, 'prevResult') : null;
  const info: CniInfo = { network: conf.name, containerId: env.containerId, ifname: env.ifname, netns: env.netns, transport: conf.transport, conf: confWithoutPrev(raw) };
  const record = draftRecord(conf.mode, null, attachmentId(conf.name, env.containerId, env.ifname));
  record.info.cni = info;
  record.transport = conf.transport;
  // On disk at once: DEL and gc find the attachment by its id even before it owns anything.
  const setup = new PreparedSetup(record, host.stateDir, true);
  const ipam = conf.ipam ? new Ipam(conf, env, raw) : null;
  try {
    let ipRes: CniResult | null = null;
    if (ipam) {
      ipRes = ipam.add();
      // The first step, so undone last: the addresses go back once nothing uses them.
      setup.rb.add('IPAM DEL', () => ipam.del());
    }
    const mac = conf.runtimeConfig?.mac ?? conf.mac;
    const ctx: AddContext = { conf, env, host, rb: setup.rb, id: record.id, ...(mac ? { mac } : {}), ...(ipRes ? { ips: ipRes.ips, routes: ipRes.routes } : {}) };
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
    const result = chain(prev, ours);
    record.kernel = a.kernel;
    record.ifname = a.hostIfname;
    record.mac = a.sandbox.mac ?? null;
    record.mtu = a.sandbox.mtu ?? 0;
    record.info = { ...record.info, state: 'active', cni: { ...info, result: ours } };
    setup.commit(true);
    return result;
  } catch (e) {
    // The record is kept when something could not be undone, so DEL or gc can retry from it.
    const failed = await setup.undoAsync();
    if (failed.length) process.stderr.write(`qemu-net-helper: could not undo: ${failed.join('; ')}\n`);
    throw e;
  }
}
