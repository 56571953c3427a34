// `up`: an endpoint made by hand or by management software, before QEMU runs.
// Nothing can hold fds for QEMU after we exit, so everything is persistent
// (taps included) and the result says how QEMU should open it.
import { kernels, transports } from '../backends/registry.js';
import { hostContextFrom, type HostContext, type TransportName } from '../backends/types.js';
import { UsageError } from '../errors.js';
import type { HelperArgs } from '../helper/args.js';
import { closeChoiceFds, realize, type ExplainEntry } from '../policy/choose.js';
import { configDir, loadProfile, policyFor } from '../policy/load.js';
import { buildRequest } from '../policy/request.js';
import { CAP_NET_ADMIN, hasCapability } from '../sys/caps.js';
import { c } from '../sys/libc.js';
import { loadEndpoint, newEndpointId, removeEndpoint, saveEndpoint, validEndpointId, type EndpointRecord } from '../state/endpoints.js';
import { completeRecord, draftRecord, journalingRollback } from './record.js';

export interface UpOptions {
  mode?: string;
  dev?: string;
  mac?: string;
  mtu?: number;
  profile?: string;
  config?: string;
  vfPool?: string[];
  id?: string;
  vnetHdr?: boolean;
}

export interface UpResult {
  endpoint: EndpointRecord;
  explain: ExplainEntry[];
  qemu: { netdev: string; device: string; shell: string };
}

export function hostFromEnv(env: NodeJS.ProcessEnv = process.env): HostContext {
  return hostContextFrom(env, c.geteuid() === 0 || hasCapability(CAP_NET_ADMIN));
}

export function qemuArgsFor(rec: EndpointRecord): UpResult['qemu'] {
  const id = rec.id.replace(/[^A-Za-z0-9_-]/g, '_');
  const mac = rec.mac ? `,mac=${rec.mac}` : '';
  if (rec.devicePath) {
    const netdev = `tap,id=${id},fd=3`;
    return { netdev, device: `virtio-net-pci,netdev=${id}${mac}`, shell: `qemu-system-x86_64 ... -netdev ${netdev} -device virtio-net-pci,netdev=${id}${mac} 3<>${rec.devicePath}` };
  }
  const netdev = `tap,id=${id},ifname=${rec.ifname},script=no,downscript=no`;
  return { netdev, device: `virtio-net-pci,netdev=${id}${mac}`, shell: `qemu-system-x86_64 ... -netdev ${netdev} -device virtio-net-pci,netdev=${id}${mac}` };
}

export function up(o: UpOptions, env: NodeJS.ProcessEnv = process.env): UpResult {
  const host = hostFromEnv(env);
  const config = configDir(o.config, env);
  const profile = o.profile ? loadProfile(config, o.profile) : null;
  if (o.profile && !profile) throw new UsageError(`no profile '${o.profile}' in ${config}/profiles`);
  const args: HelperArgs = { useVnet: o.vnetHdr ?? true, bridge: o.dev ?? 'br0', fd: -1, help: false };
  if (o.mode) args.mode = o.mode;
  if (o.dev) args.dev = o.dev;
  if (o.mac) args.mac = o.mac;
  if (o.mtu) args.mtu = o.mtu;
  if (o.vfPool) args.vfPool = o.vfPool;
  const { mode, req } = buildRequest(args, profile);
  req.persist = true;
  const policy = policyFor(config, mode);
  const id = o.id ?? newEndpointId();
  if (!validEndpointId(id)) throw new UsageError(`endpoint id '${id}' is not valid`, 'use letters, digits, . _ - (at most 64)');
  if (loadEndpoint(host.stateDir, id)) throw new UsageError(`endpoint '${id}' already exists`, `take it down first: qemu-net-helper down ${id}`);
  const record = draftRecord(mode, null, id);
  saveEndpoint(host.stateDir, record);
  const rb = journalingRollback(record, host.stateDir);
  const allowed: TransportName[] = ['tap', 'macvtap'];
  // A manual endpoint lives until `down`: its claims are owned by init (pid 1),
  // whose identity never changes, so they are never mistaken for stale.
  req.params.ownerPid = 1;
  req.params.endpointId = id;
  try {
    const choice = realize(mode, policy, req, host, { kernels, transports }, allowed, rb);
    closeChoiceFds(choice);
    rb.commit();
    completeRecord(record, choice);
    saveEndpoint(host.stateDir, record);
    return { endpoint: record, explain: choice.explain, qemu: qemuArgsFor(record) };
  } catch (e) {
    const left = rb.undoAllSync();
    if (left.length === 0) removeEndpoint(host.stateDir, id);
    throw e;
  }
}
