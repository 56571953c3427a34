// Transport "vhost-kernel": the tap (or macvtap) queue fds plus one open
// /dev/vhost-net per queue, so QEMU (`-netdev tap,fds=..,vhost=on,vhostfds=..`)
// runs the data path in the kernel. Only the extended protocol and `run` can
// carry several fds. This host's kernel has no /dev/vhost-net: the data path is
// proved in the kernel lab (test/lab), selection and errors here.
import { existsSync } from 'node:fs';
import { PermissionError, UnsupportedError } from '../../errors.js';
import { closeFd, openReadWrite, SysError } from '../../sys/libc.js';
import type { HostContext, Transport } from '../types.js';
import type { Rollback } from '../../state/rollback.js';

function openVhostNet(host: HostContext, rb: Rollback): number {
  let vfd: number;
  try {
    vfd = openReadWrite(host.vhostNetDevice);
  } catch (e) {
    if (e instanceof SysError && (e.code === 'EACCES' || e.code === 'EPERM')) throw new PermissionError(`no permission to open ${host.vhostNetDevice}`, 'add the user to the kvm group or run as root');
    if (e instanceof SysError) throw new UnsupportedError(`cannot open ${host.vhostNetDevice}: ${e.code}`, "load the vhost_net module ('modprobe vhost_net')");
    throw e;
  }
  rb.add(`close ${host.vhostNetDevice}`, () => closeFd(vfd));
  return vfd;
}

export const vhostKernelTransport: Transport = {
  name: 'vhost-kernel',
  probe: (host) => existsSync(host.vhostNetDevice)
    ? { available: true, reason: `${host.vhostNetDevice} present` }
    : { available: false, reason: `${host.vhostNetDevice} missing (vhost_net module not loaded or no kernel support)` },
  // vhost-net takes any fd that is a tap or a macvtap queue (the kernel's tap_get_socket).
  accepts: (kind) => kind === 'tap' || kind === 'macvtap',
  attach(ep, req, host, rb) {
    // fds: the queue fds first, then one vhost-net fd per queue, in the same order.
    const queueFds = ep.fds.slice(0, Math.max(1, req.queues));
    const vhostFds = queueFds.map(() => openVhostNet(host, rb));
    return {
      transport: 'vhost-kernel',
      fds: [...queueFds, ...vhostFds],
      vnetHdrSize: ep.vnetHdr ? 12 : 0,
      queues: queueFds.length,
      info: { ifname: ep.ifname, vhostDevice: host.vhostNetDevice, ...(ep.info.chardev ? { chardev: ep.info.chardev } : {}), ...(ep.devicePath ? { devicePath: ep.devicePath } : {}) },
    };
  },
};
