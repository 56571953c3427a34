// Transport "tap": the kernel implementation already opened a tap (bridge,
// route, nat); QEMU gets that one fd through the helper protocol.
import { existsSync } from 'node:fs';
import type { Transport } from '../types.js';

export const tapTransport: Transport = {
  name: 'tap',
  probe: (host) => existsSync(host.tunDevice) ? { available: true, reason: `${host.tunDevice} present` } : { available: false, reason: `${host.tunDevice} missing` },
  accepts: (kernel) => kernel === 'bridge' || kernel === 'route' || kernel === 'nat',
  attach(ep) {
    return { transport: 'tap', fds: ep.fds.slice(0, 1), vnetHdrSize: ep.vnetHdr ? 12 : 0, queues: 1, info: { ifname: ep.ifname } };
  },
};
