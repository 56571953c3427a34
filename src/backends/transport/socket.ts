// Transport "socket": QEMU gets one end of a datagram socketpair
// (`-netdev socket,id=n0,fd=N`); a relay process of ours moves frames between
// the other end and the kernel endpoint's interface (a veth end). Only the
// extended protocol can carry it: QEMU's helper protocol insists on a tap fd.
import { closeFd } from '../../sys/libc.js';
import { dgramPair, openPacketSocket } from '../../sys/packet.js';
import { spawnRelay } from './relay.js';
import { childEnv } from '../../host/context.js';
import { ownerOf, type OwnerRef } from '../../state/owner.js';
import type { Transport } from '../types.js';

export const socketTransport: Transport = {
  name: 'socket',
  probe: () => ({ available: true, reason: 'AF_PACKET relay to a datagram socket' }),
  accepts: (kind) => kind === 'veth',
  attach(ep, req, host, rb) {
    const pkt = openPacketSocket(ep.ifname);
    rb.add(`close packet socket on ${ep.ifname}`, () => closeFd(pkt));
    const [qemuEnd, relayEnd] = dgramPair();
    rb.add('close socket pair', () => { closeFd(qemuEnd); closeFd(relayEnd); });
    let owner: OwnerRef | null = null;
    try {
      if (typeof req.params.ownerPid === 'number') owner = ownerOf(req.params.ownerPid);
    } catch { owner = null; }
    const pid = spawnRelay(pkt, relayEnd, owner, childEnv(host));
    rb.add(`stop relay ${pid}`, () => { try { process.kill(pid, 'SIGKILL'); } catch { /* gone */ } });
    // The relay has its own copies now.
    closeFd(pkt);
    closeFd(relayEnd);
    return { transport: 'socket', fds: [qemuEnd], vnetHdrSize: 0, queues: 1, info: { ifname: ep.ifname, relayPid: pid, qemu: 'socket,fd=N (a datagram socket)' } };
  },
};
