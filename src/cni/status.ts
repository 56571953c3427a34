// CNI STATUS: can an ADD succeed now? The device the config names exists
// here, a VF pool still has a free VF, and the IPAM plugin is installed.
import { sriovBackend } from '../backends/kernel/sriov.js';
import { vswitchBackend } from '../backends/kernel/vswitch.js';
import type { HostContext } from '../backends/types.js';
import { linkShow } from '../net/ip.js';
import type { NetConf } from './config.js';
import type { CniEnv } from './env.js';
import { CniCode, CniError } from './errors.js';
import { findPlugin } from './ipam.js';

export function cmdStatus(conf: NetConf, env: CniEnv, host: HostContext): void {
  if (conf.transport === 'vf') {
    const a = sriovBackend.probe({ mode: 'passthrough', ...(conf.dev ? { dev: conf.dev } : {}), ...(conf.vfPool ? { vfPool: conf.vfPool } : {}), params: {} }, host);
    if (!a.available) throw new CniError(CniCode.NOT_AVAILABLE, `plugin not available: ${a.reason}`);
  } else if (conf.dev && !linkShow(conf.dev)) {
    throw new CniError(CniCode.NOT_AVAILABLE, `plugin not available: dev '${conf.dev}' does not exist on the host`);
  }
  if (conf.transport === 'vhost-user') {
    const a = vswitchBackend.probe({ mode: conf.mode }, host);
    if (!a.available) throw new CniError(CniCode.NOT_AVAILABLE, `plugin not available: ${a.reason}`);
  }
  if (conf.ipam) {
    try {
      findPlugin(conf.ipam.type, env.path);
    } catch (e) {
      throw new CniError(CniCode.NOT_AVAILABLE, `plugin not available: ${(e as Error).message}`);
    }
  }
}
