// Transport "vhost-user": QEMU connects to a switch port's unix socket itself
// (-chardev socket,path=... -netdev vhost-user); no fd is passed, so only the
// extended protocol (and `up`) can offer it: the reply carries the path.
import type { Transport } from '../types.js';

export const vhostUserTransport: Transport = {
  name: 'vhost-user',
  probe: () => ({ available: true, reason: 'a socket path for -netdev vhost-user' }),
  accepts: (kind) => kind === 'vswitch-port',
  attach(ep) {
    const socket = String(ep.info.socket);
    return {
      transport: 'vhost-user', fds: [], vnetHdrSize: 12, queues: 1,
      info: { socket, qemu: `-chardev socket,id=CHR,path=${socket} -netdev vhost-user,id=NET,chardev=CHR (guest memory shared: memory-backend-memfd,share=on)` },
    };
  },
};
