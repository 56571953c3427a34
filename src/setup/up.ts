// `up`: an endpoint made by hand or by management software, before QEMU runs.
// Nothing can hold fds for QEMU after we exit, so everything is persistent
// (taps included) and the result says how QEMU should open it.
import type { Caller } from '../access/caller.js';
import { UsageError } from '../errors.js';
import type { HostContext } from '../host/context.js';
import type { ExplainEntry } from '../policy/choose.js';
import { setupEndpoint } from './endpoint.js';
import { upRequest } from './request.js';
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

/** QEMU's -m size: a number (MiB, as -m reads it) or with a K/M/G/T suffix; null when malformed. */
export function qemuMemorySize(text: string): string | null {
  const m = /^([1-9]\d{0,9})([KMGT])?$/i.exec(text.trim());
  if (!m) return null;
  return `${m[1]}${(m[2] ?? 'M').toUpperCase()}`;
}

/**
 * The QEMU arguments for an endpoint. vhost-user shares the guest's memory,
 * so its line needs the guest's RAM size (`memory`, as for -m): with it the
 * line is complete; without it (a broker's reply) the memory part is left out
 * and the CLI, which requires --memory for vhost-user, fills it in.
 */
export function qemuArgsFor(rec: EndpointRecord, memory?: string): UpResult['qemu'] {
  const id = rec.id.replace(/[^A-Za-z0-9_-]/g, '_');
  const mac = rec.mac ? `,mac=${rec.mac}` : '';
  if (rec.transport === 'vhost-user') {
    const socket = String(rec.info.socket);
    const netdev = `vhost-user,id=${id},chardev=chr-${id}`;
    const device = `virtio-net-pci,netdev=${id}${mac}`;
    const mem = memory ? ` -m ${memory} -object memory-backend-memfd,id=mem,size=${memory},share=on -machine memory-backend=mem` : '';
    return { netdev, device, shell: `qemu-system-x86_64 ...${mem} -chardev socket,id=chr-${id},path=${socket} -netdev ${netdev} -device ${device}` };
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
  // No silent default (a persistent tap on br0 nobody asked for): say what you want.
  if (!o.mode && !o.profile) throw new UsageError('up needs --mode or --profile', "e.g. 'qemu-net-helper up --mode=bridge --br=br0'; see 'qemu-net-helper up --help'");
  const r = setupEndpoint(upRequest(o), { host: ctx.host, config: ctx.config, admission: { acl: ctx.acl, caller: ctx.caller } });
  return { endpoint: r.record, explain: r.choice.explain, qemu: qemuArgsFor(r.record) };
}
