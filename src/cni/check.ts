// CNI CHECK: the attachment the runtime's prevResult describes must still be
// there: our record, the sandbox interface with its MAC, its addresses (where
// we put them), the host side of a veth, and IPAM's own view.
import type { HostContext } from '../backends/types.js';
import { DEFAULT_NAT_BRIDGE } from '../backends/kernel/nat-plan.js';
import { linkShow } from '../net/ip.js';
import { controlRequest } from '../vhost-user/control/sync-client.js';
import type { NetConf } from './config.js';
import type { CniEnv } from './env.js';
import { CniCode, CniError } from './errors.js';
import { Ipam } from './ipam.js';
import { checkIps } from './ipconf.js';
import { readResult } from './result.js';
import { sLink } from '../net/netns-ip.js';
import { requireNetns } from './sandbox.js';
import { cniInfo, loadAttachment } from './store.js';

const BROKEN = CniCode.HELPER_BASE + 5; // like the helper's "not found"

export function cmdCheck(conf: NetConf, raw: Record<string, unknown>, env: CniEnv, host: HostContext): void {
  if (!conf.prevResult) throw new CniError(CniCode.INVALID_CONFIG, 'CHECK needs prevResult', 'the runtime passes the result of ADD as prevResult');
  requireNetns(env.netns);
  const prev = readResult(conf.prevResult, 'prevResult');
  const rec = loadAttachment(host.stateDir, conf.name, env.containerId, env.ifname);
  if (!rec || !cniInfo(rec)) throw new CniError(BROKEN, `no attachment of container ${env.containerId} '${env.ifname}' on network '${conf.name}'`);
  const idx = prev.interfaces.findIndex((i) => i.name === env.ifname && i.sandbox === env.netns);
  if (idx < 0) throw new CniError(CniCode.INVALID_CONFIG, `prevResult has no interface '${env.ifname}' in ${env.netns}`);
  const want = prev.interfaces[idx]!;
  if (rec.kernel === 'vswitch') {
    // No link in the sandbox: the switch must still have the port on that socket.
    const r = controlRequest(host.switchControl, { op: 'list' });
    const ports = (r.ports ?? []) as { socket?: string }[];
    if (!r.ok || !ports.some((p) => p.socket === want.socketPath)) throw new CniError(BROKEN, `the switch has no port on ${String(want.socketPath)}`);
    return;
  }
  const l = sLink(env.netns, env.ifname);
  if (!l) throw new CniError(BROKEN, `interface '${env.ifname}' is missing in ${env.netns}`);
  if (want.mac && l.address?.toLowerCase() !== want.mac.toLowerCase()) {
    throw new CniError(BROKEN, `interface '${env.ifname}' has MAC ${l.address}, the result says ${want.mac}`);
  }
  if (!l.flags?.includes('UP')) throw new CniError(BROKEN, `interface '${env.ifname}' in ${env.netns} is down`);
  if (['veth', 'macvlan', 'sriov', 'route', 'nat'].includes(rec.kernel)) {
    if (rec.transport !== 'tap') checkIps(env.netns, env.ifname, prev.ips.filter((i) => i.interface === idx));
  }
  if (['veth', 'route', 'nat'].includes(rec.kernel) && rec.ifname) {
    const h = linkShow(rec.ifname);
    if (!h) throw new CniError(BROKEN, `host end '${rec.ifname}' of the veth is missing`);
    const bridge = rec.kernel === 'nat' ? (conf.dev ?? DEFAULT_NAT_BRIDGE) : rec.kernel === 'veth' ? conf.dev : undefined;
    if (bridge && h.master !== bridge) throw new CniError(BROKEN, `host end '${rec.ifname}' is not on bridge '${bridge}'`);
  }
  if (conf.ipam) new Ipam(conf, env, raw).check(conf.prevResult);
}
