// Transport "macvtap": QEMU gets the macvtap character device's fd (it answers
// TUNGETIFF, so the plain helper protocol carries it). A macvtap kernel
// endpoint already opened it; for an endpoint that is a plain netdev (an
// SR-IOV VF) a passthru macvtap is stacked on it here, as libvirt's
// <interface type='direct'> with a VF does.
import { existsSync } from 'node:fs';
import { setupMacvtap } from '../kernel/macvtap.js';
import type { Transport } from '../types.js';

export const macvtapTransport: Transport = {
  name: 'macvtap',
  probe: () => existsSync('/sys/module/macvtap') || existsSync('/proc/sys/net') ? { available: true, reason: 'macvtap character devices' } : { available: false, reason: 'no macvtap support' },
  accepts: (kind) => kind === 'macvtap' || kind === 'netdev',
  attach(ep, req, host, rb) {
    // A macvtap endpoint comes with its queue fds open; a netdev with none.
    if (ep.fds.length > 0) {
      return { transport: 'macvtap', fds: ep.fds, vnetHdrSize: ep.vnetHdr ? 12 : 0, queues: ep.fds.length, info: { ifname: ep.ifname, chardev: ep.info.chardev, ...(ep.devicePath ? { devicePath: ep.devicePath } : {}) } };
    }
    // The VF's own port VLAN (sriov) stands for `vlan`: no VLAN link on top of it.
    const { mac: _guestMac, vlan: _vlan, ...rest } = req;
    void _guestMac; void _vlan;
    // The VF already carries the guest MAC (set by the sriov implementation);
    // passthru makes the macvtap share it.
    const mv = setupMacvtap({ ...rest, dev: ep.ifname, params: { ...req.params, macvtapMode: 'passthru' } }, host, rb);
    ep.owned.push(...mv.owned);
    if (mv.devicePath) ep.devicePath = mv.devicePath;
    return { transport: 'macvtap', fds: mv.fds, vnetHdrSize: mv.vnetHdr ? 12 : 0, queues: mv.fds.length, info: { ifname: mv.ifname, vf: ep.ifname, chardev: mv.info.chardev, ...(mv.devicePath ? { devicePath: mv.devicePath } : {}) } };
  },
};
