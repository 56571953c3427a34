// `up`: an endpoint made by hand or by management software, before QEMU runs.
// Nothing can hold fds for QEMU after we exit, so everything is persistent
// (taps included) and the result says how QEMU should open it.
import type { Caller } from '../access/caller.js';
import type { HostContext } from '../host/context.js';
import type { ExplainEntry } from '../policy/choose.js';
import { setupEndpoint } from '../setup/endpoint.js';
import type { EndpointRecord } from '../state/endpoints.js';

export interface UpOptions {
  mode?: string;
  dev?: string;
  mac?: string;
  mtu?: number;
  profile?: string;
  vfPool?: string[];
  id?: string;
  vnetHdr?: boolean;
  /** tap or macvtap (the default: whichever the policy picks), or vhost-user (a port on our switch). */
  transport?: 'tap' | 'macvtap' | 'vhost-user';
}

export interface UpResult {
  endpoint: EndpointRecord;
  explain: ExplainEntry[];
  qemu: { netdev: string; device: string; shell: string };
}

export function qemuArgsFor(rec: EndpointRecord): UpResult['qemu'] {
  const id = rec.id.replace(/[^A-Za-z0-9_-]/g, '_');
  const mac = rec.mac ? `,mac=${rec.mac}` : '';
  if (rec.transport === 'vhost-user') {
    const socket = String(rec.info.socket);
    const netdev = `vhost-user,id=${id},chardev=chr-${id}`;
    const device = `virtio-net-pci,netdev=${id}${mac}`;
    return { netdev, device, shell: `qemu-system-x86_64 ... -object memory-backend-memfd,id=mem,size=RAM,share=on -machine memory-backend=mem -chardev socket,id=chr-${id},path=${socket} -netdev ${netdev} -device ${device}` };
  }
  if (rec.devicePath) {
    const netdev = `tap,id=${id},fd=3`;
    return { netdev, device: `virtio-net-pci,netdev=${id}${mac}`, shell: `qemu-system-x86_64 ... -netdev ${netdev} -device virtio-net-pci,netdev=${id}${mac} 3<>${rec.devicePath}` };
  }
  const netdev = `tap,id=${id},ifname=${rec.ifname},script=no,downscript=no`;
  return { netdev, device: `virtio-net-pci,netdev=${id}${mac}`, shell: `qemu-system-x86_64 ... -netdev ${netdev} -device virtio-net-pci,netdev=${id}${mac}` };
}

export interface UpContext {
  host: HostContext;
  /** null: root's own `up`, which no ACL restricts; the broker passes its ACL for its clients. */
  acl: string | null;
  config: string;
  caller: Caller;
}

export function up(o: UpOptions, ctx: UpContext): UpResult {
  const r = setupEndpoint({
    useVnet: o.vnetHdr ?? true, bridge: o.dev ?? 'br0',
    ...(o.mode ? { mode: o.mode } : {}), ...(o.dev ? { dev: o.dev } : {}), ...(o.mac ? { mac: o.mac } : {}),
    ...(o.mtu ? { mtu: o.mtu } : {}), ...(o.vfPool ? { vfPool: o.vfPool } : {}), ...(o.profile ? { profile: o.profile } : {}),
  }, { ...ctx, protocols: o.transport ? [o.transport] : ['tap', 'macvtap'], owner: null, manual: true, ...(o.id ? { id: o.id } : {}) });
  return { endpoint: r.record, explain: r.choice.explain, qemu: qemuArgsFor(r.record) };
}
