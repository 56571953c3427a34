// A CNI ADD as the setup tier's request: the attachment's record identity
// (its stable id, no owner: the runtime's DEL ends it), what it would take
// (device, MAC, VFs: an exited owner's endpoint holding one is reaped first)
// and the attachment facts DEL and GC find it by. Pure: the attachment kinds
// themselves stay the CNI attach functions'.
import { wantedBy } from '../lifecycle/reap.js';
import type { SetupDraft } from '../setup/tier.js';
import type { NetConf } from './config.js';
import type { CniEnv } from './env.js';
import { attachmentId, type CniInfo } from './store.js';

export interface CniRequest {
  draft: SetupDraft;
  info: CniInfo;
  /** runtimeConfig.mac wins over the config's mac (the 'mac' capability). */
  mac?: string;
}

/** The config as given without prevResult: IPAM DEL from GC needs it, a chain's past does not belong in the record. */
function confWithoutPrev(raw: Record<string, unknown>): Record<string, unknown> {
  const { prevResult: _p, ...rest } = raw;
  return rest;
}

export function cniRequest(conf: NetConf, env: CniEnv, raw: Record<string, unknown>): CniRequest {
  const mac = conf.runtimeConfig?.mac ?? conf.mac;
  const info: CniInfo = { network: conf.name, containerId: env.containerId, ifname: env.ifname, netns: env.netns, transport: conf.transport, conf: confWithoutPrev(raw) };
  const draft: SetupDraft = {
    mode: conf.mode, id: attachmentId(conf.name, env.containerId, env.ifname), owner: null, transport: conf.transport,
    info: { cni: info },
    wanted: wantedBy({ dev: conf.dev, mac, vfPool: conf.vfPool }),
    // On disk at once: DEL and gc find the attachment by its id even before it owns anything.
    saveNow: true,
  };
  return { draft, info, ...(mac ? { mac } : {}) };
}
