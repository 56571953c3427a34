// Kernel implementation "vswitch": no kernel object at all, a port on our own
// running vhost-user switch (`vhost-user serve --control PATH`), asked for
// through its control socket. The port's socket lives in the state directory
// (the switch listens on it; QEMU connects); the port is an owned object,
// removed through the same control socket when the endpoint ends. The port
// belongs to the caller we act for (params ownerUid/ownerGid): the switch lets
// only that user's QEMU (or root) connect to it.
import { formatMac } from '../../net/mac.js';
import { existsSync, mkdirSync } from 'node:fs';
import { join } from 'node:path';
import { SetupError, UnsupportedError } from '../../errors.js';
import type { Rollback } from '../../state/rollback.js';
import { controlRequest } from '../../vhost-user/control/sync-client.js';
import type { Availability, EndpointRequest, HostContext, KernelBackend, KernelEndpoint, OwnedObject } from '../types.js';
import { dataString } from './kerrors.js';

export const KIND_PORT = 'vhost-user-port';
const SWITCH_MODES: Record<string, string> = { veb: 'veb', vepa: 'vepa', private: 'private', bridge: 'veb' };

function portSocket(host: HostContext, id: string): string {
  const dir = join(host.stateDir, 'vhost-user');
  // 0711: an unprivileged QEMU must reach its socket inside (the switch makes it the port owner's, mode 0600).
  mkdirSync(dir, { recursive: true, mode: 0o711 });
  return join(dir, `${id}.sock`);
}

const isId = (v: unknown): v is number => typeof v === 'number' && Number.isInteger(v) && v >= 0 && v <= 0xfffffffe;

/** The user the port is for, when the caller named one (else the switch's default owner). */
function portOwner(params: Record<string, unknown>): { uid: number; gid: number } | null {
  return isId(params.ownerUid) && isId(params.ownerGid) ? { uid: params.ownerUid, gid: params.ownerGid } : null;
}

function releasePort(obj: OwnedObject, host: HostContext): void {
  if (obj.kind !== KIND_PORT) throw new SetupError(`the vswitch kernel cannot release objects of kind '${obj.kind}'`);
  const socket = dataString(obj.data, 'socket', obj.kind);
  // Only our switch, and only a port socket of ours: a forged record names neither another socket nor another switch.
  if (!socket.startsWith(join(host.stateDir, 'vhost-user') + '/')) throw new SetupError(`refusing to remove vhost-user port '${socket}': not a socket of ours`);
  if (!existsSync(host.switchControl)) return; // the switch is gone, and its ports with it
  const r = controlRequest(host.switchControl, { op: 'remove-port', socket });
  if (!r.ok && !/no port on socket/.test(String(r.error))) throw new SetupError(`the switch refused to remove port ${socket}: ${r.error}`);
}

export const vswitchBackend: KernelBackend = {
  name: 'vswitch',
  yields: 'vswitch-port',
  probe(req: Partial<EndpointRequest>, host: HostContext): Availability {
    if (!existsSync(host.switchControl)) return { available: false, reason: `no vhost-user switch control socket at ${host.switchControl}` };
    if (req.mode && !SWITCH_MODES[req.mode]) return { available: false, reason: `the switch has no ${req.mode} mode` };
    return { available: true, reason: `vhost-user switch at ${host.switchControl}` };
  },
  setup(req: EndpointRequest, host: HostContext, rb: Rollback): KernelEndpoint {
    const mode = SWITCH_MODES[req.mode];
    if (!mode) throw new UnsupportedError(`the vhost-user switch has no ${req.mode} mode`);
    const id = typeof req.params.endpointId === 'string' ? req.params.endpointId : `port-${process.pid}-${Date.now()}`;
    const socket = portSocket(host, id);
    const owner = portOwner(req.params);
    const r = controlRequest(host.switchControl, { op: 'add-port', socket, client: false, mode, ...(owner ? { owner } : {}) });
    if (!r.ok) throw new SetupError(`the vhost-user switch refused a port: ${r.error}`);
    const owned: OwnedObject = { kind: KIND_PORT, data: { socket, port: r.port } };
    rb.add(`remove switch port ${String(r.port)}`, () => releasePort(owned, host), { backend: 'vswitch', obj: owned });
    return {
      kernel: 'vswitch', ifname: `port${String(r.port)}`, fds: [], vnetHdr: true, mtu: req.mtu ?? 1500,
      ...(req.mac ? { mac: formatMac(req.mac) } : {}),
      owned: [owned], info: { socket, port: r.port, switchMode: mode },
    };
  },
  release: releasePort,
};
