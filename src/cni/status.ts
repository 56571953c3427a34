// CNI STATUS: can an ADD succeed now? The device the config names exists
// here (mode nat: what its network needs), a VF pool still has a free VF,
// and the IPAM plugin is installed and, if it speaks CNI 1.1, ready by its
// own STATUS (CNI 1.1: a plugin passes STATUS on to its IPAM delegate).
import { sriovBackend } from '../backends/kernel/sriov.js';
import { natBackend } from '../backends/kernel/nat.js';
import { vswitchBackend } from '../backends/kernel/vswitch.js';
import type { HostContext } from '../backends/types.js';
import { linkShow } from '../net/ip.js';
import type { NetConf } from './config.js';
import type { CniEnv } from './env.js';
import { CniCode, CniError } from './errors.js';
import { Ipam } from './ipam.js';

export function cmdStatus(conf: NetConf, raw: Record<string, unknown>, env: CniEnv, host: HostContext): void {
  if (conf.transport === 'vf') {
    const a = sriovBackend.probe({ mode: 'passthrough', ...(conf.dev ? { dev: conf.dev } : {}), ...(conf.vfPool ? { vfPool: conf.vfPool } : {}), params: {} }, host);
    if (!a.available) throw new CniError(CniCode.NOT_AVAILABLE, `plugin not available: ${a.reason}`);
  } else if (conf.mode === 'nat') {
    // dev is the NAT bridge we make: the kernel, nft and dnsmasq must be there, and dev ours if it exists.
    const a = natBackend.probe({ mode: 'nat', ...(conf.dev ? { dev: conf.dev } : {}), ...(conf.subnet ? { subnet: conf.subnet } : {}), params: {} }, host);
    if (!a.available) throw new CniError(CniCode.NOT_AVAILABLE, `plugin not available: ${a.reason}`);
  } else if (conf.dev && !linkShow(conf.dev)) {
    throw new CniError(CniCode.NOT_AVAILABLE, `plugin not available: dev '${conf.dev}' does not exist on the host`);
  }
  if (conf.transport === 'vhost-user') {
    const a = vswitchBackend.probe({ mode: conf.mode }, host);
    if (!a.available) throw new CniError(CniCode.NOT_AVAILABLE, `plugin not available: ${a.reason}`);
  }
  if (conf.ipam) {
    let ipam: Ipam;
    let delegate: boolean;
    try {
      ipam = new Ipam(conf, env, raw);
      delegate = ipam.knows('STATUS');
    } catch (e) {
      throw new CniError(CniCode.NOT_AVAILABLE, `plugin not available: ${(e as Error).message}`);
    }
    // A delegate speaking 1.1 answers for itself (its errors are ours); an
    // older one has just shown it is installed and runs (it answered VERSION).
    if (delegate) ipam.status();
  }
}
