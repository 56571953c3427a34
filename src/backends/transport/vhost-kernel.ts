// Transport "vhost-kernel": the tap fd plus an open /dev/vhost-net, so QEMU
// (`-netdev tap,fd=T,vhost=on,vhostfd=V`) runs the data path in the kernel.
// Only the extended protocol can carry two fds. This machine has no
// /dev/vhost-net: the device path is configurable (QEMU_NET_HELPER_VHOST_NET)
// and only selection and errors are tested here.
import { existsSync } from 'node:fs';
import { PermissionError, UnsupportedError } from '../../errors.js';
import { c, check, closeFd, O_CLOEXEC, O_RDWR, SysError } from '../../sys/libc.js';
import type { Transport } from '../types.js';

export const vhostKernelTransport: Transport = {
  name: 'vhost-kernel',
  probe: (host) => existsSync(host.vhostNetDevice)
    ? { available: true, reason: `${host.vhostNetDevice} present` }
    : { available: false, reason: `${host.vhostNetDevice} missing (vhost_net module not loaded or no kernel support)` },
  accepts: (kernel) => kernel === 'bridge' || kernel === 'route' || kernel === 'nat',
  attach(ep, _req, host, rb) {
    let vfd: number;
    try {
      vfd = check(c.open(host.vhostNetDevice, O_RDWR | O_CLOEXEC), 'open', host.vhostNetDevice);
    } catch (e) {
      if (e instanceof SysError && (e.code === 'EACCES' || e.code === 'EPERM')) throw new PermissionError(`no permission to open ${host.vhostNetDevice}`, 'add the user to the kvm group or run as root');
      if (e instanceof SysError) throw new UnsupportedError(`cannot open ${host.vhostNetDevice}: ${e.code}`, "load the vhost_net module ('modprobe vhost_net')");
      throw e;
    }
    rb.add(`close ${host.vhostNetDevice}`, () => closeFd(vfd));
    return { transport: 'vhost-kernel', fds: [ep.fds[0]!, vfd], vnetHdrSize: ep.vnetHdr ? 12 : 0, queues: 1, info: { ifname: ep.ifname, vhostDevice: host.vhostNetDevice } };
  },
};
