// Transport "tap": the kernel implementation already opened a tap (bridge,
// route, nat); QEMU gets that fd through the helper protocol, or one fd per
// queue of a multiqueue tap (`run`, the extended protocol).
import { existsSync } from 'node:fs';
import type { Transport } from '../types.js';

export const tapTransport: Transport = {
  name: 'tap',
  probe: (host) => existsSync(host.tunDevice) ? { available: true, reason: `${host.tunDevice} present` } : { available: false, reason: `${host.tunDevice} missing` },
  accepts: (kind) => kind === 'tap',
  attach(ep, req) {
    const fds = ep.fds.slice(0, Math.max(1, req.queues));
    return { transport: 'tap', fds, vnetHdrSize: ep.vnetHdr ? 12 : 0, queues: fds.length, info: { ifname: ep.ifname } };
  },
};
