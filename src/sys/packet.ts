// AF_PACKET sockets: the socket transport's view of a veth end. Every frame
// arriving on the interface is read whole; a frame written is sent out of it.
// Optionally with mmap'ed TPACKET_V2 RX and TX rings (the switch uplink):
// the layout is in tpacket.ts, the mapping is the caller's.
import { c, check, closeFd, koffi, O_CLOEXEC as SOCK_CLOEXEC } from './libc.js';
import { ifIndex } from './netdev.js';
import { encodeTpacketReq, type RingGeometry } from './tpacket.js';

const lib = koffi.load('libc.so.6');
const bindRaw = lib.func('int bind(int fd, const void *addr, uint32_t len)');
const setsockoptRaw = lib.func('int setsockopt(int fd, int level, int name, const void *val, uint32_t len)');
const sendRaw = lib.func('intptr_t send(int fd, const void *buf, size_t len, int flags)');
const AF_PACKET = 17;
const SOCK_RAW = 3;
const SOCK_NONBLOCK = 0o4000;
const ETH_P_ALL_BE = 0x0300; // htons(ETH_P_ALL = 3)
const SOL_PACKET = 263;
const PACKET_IGNORE_OUTGOING = 23;
const PACKET_ADD_MEMBERSHIP = 1;
const PACKET_MR_PROMISC = 1;
const SOL_SOCKET = 1;
const SO_RCVBUF = 8;
const SO_RCVBUFFORCE = 33;
const PACKET_RX_RING = 5;
const PACKET_VERSION = 10;
const PACKET_TX_RING = 13;
const PACKET_LOSS = 14;
const PACKET_QDISC_BYPASS = 20;
const PACKET_VNET_HDR = 15;
const PACKET_COPY_THRESH = 7;
const TPACKET_V2 = 1;
const MSG_DONTWAIT = 0x40;

export interface PacketRings { rx: RingGeometry; tx: RingGeometry }

/** Bytes to mmap for `rings`: the RX ring first, the TX ring right after it. */
export const ringsBytes = (r: PacketRings): number => r.rx.blockSize * r.rx.blockCount + r.tx.blockSize * r.tx.blockCount;

function setInt(fd: number, level: number, name: number, value: number, what: string): void {
  const v = Buffer.alloc(4);
  v.writeInt32LE(value);
  check(setsockoptRaw(fd, level, name, v, 4), 'setsockopt', what);
}

/**
 * Asks the kernel to send every TX ring slot marked SEND_REQUEST, without
 * waiting. Returns false when it could not take them all now (EAGAIN,
 * ENOBUFS: the slots stay marked and go with the next kick).
 */
export function kickTxRing(fd: number): boolean {
  return Number(sendRaw(fd, null, 0, MSG_DONTWAIT)) >= 0;
}

/**
 * A non-blocking packet socket bound to `ifname`, not seeing its own
 * transmissions. `promiscuous`: the device also passes frames for other MACs
 * (a switch uplink), for as long as the socket lives (the kernel counts
 * membership per socket and drops it on close). `rcvbuf`: receive buffer in
 * bytes (the default, rmem_default, is ~208 KiB of skb truesize: a few
 * hundred frames, where a tap queues 1000). `vnetHdr`: every frame read or
 * written carries a struct virtio_net_hdr (tpacket.ts PACKET_VNET_LEN) in
 * front, so GSO and partial-checksum frames cross as they are; both rings of
 * TPACKET_V2 honour it (tpacket_rcv fills it in before the MAC header,
 * tpacket_snd parses it). With rings, a received frame bigger than its slot
 * (a GSO skb up to 64 KiB; slots stay MTU-sized) is also queued whole on the
 * socket, its slot marked TP_STATUS_COPY (PACKET_COPY_THRESH), to be read()
 * with its header; `rcvbuf` bounds how many wait there.
 */
export function openPacketSocket(ifname: string, promiscuous = false, rcvbuf = 0, rings?: PacketRings, vnetHdr = false): number {
  const index = ifIndex(ifname);
  if (index === 0) throw new Error(`no interface ${ifname}`);
  const fd = check(c.socket(AF_PACKET, SOCK_RAW | SOCK_NONBLOCK | SOCK_CLOEXEC, ETH_P_ALL_BE), 'socket', 'AF_PACKET');
  try {
    const one = Buffer.alloc(4);
    one.writeInt32LE(1);
    // Without this we would read back every frame we send (kernel >= 4.20).
    check(setsockoptRaw(fd, SOL_PACKET, PACKET_IGNORE_OUTGOING, one, 4), 'setsockopt', 'PACKET_IGNORE_OUTGOING');
    if (rcvbuf > 0) {
      const size = Buffer.alloc(4);
      size.writeInt32LE(rcvbuf);
      // FORCE passes rmem_max (needs CAP_NET_ADMIN); otherwise the kernel caps at rmem_max.
      if (setsockoptRaw(fd, SOL_SOCKET, SO_RCVBUFFORCE, size, 4) !== 0) setsockoptRaw(fd, SOL_SOCKET, SO_RCVBUF, size, 4);
    }
    // Before the rings: the kernel refuses to change it once they exist (EBUSY).
    if (vnetHdr) setInt(fd, SOL_PACKET, PACKET_VNET_HDR, 1, 'PACKET_VNET_HDR');
    if (vnetHdr && rings) setInt(fd, SOL_PACKET, PACKET_COPY_THRESH, 1, 'PACKET_COPY_THRESH');
    if (rings) {
      // Rings before bind, so no frame arrives into the socket's plain queue.
      setInt(fd, SOL_PACKET, PACKET_VERSION, TPACKET_V2, 'PACKET_VERSION');
      // A slot the kernel cannot send (over the MTU) is skipped, not left to
      // block every slot behind it.
      setInt(fd, SOL_PACKET, PACKET_LOSS, 1, 'PACKET_LOSS');
      // Straight to the driver, as a tap's frames go: no qdisc in between.
      setInt(fd, SOL_PACKET, PACKET_QDISC_BYPASS, 1, 'PACKET_QDISC_BYPASS');
      check(setsockoptRaw(fd, SOL_PACKET, PACKET_RX_RING, encodeTpacketReq(rings.rx), 16), 'setsockopt', 'PACKET_RX_RING');
      check(setsockoptRaw(fd, SOL_PACKET, PACKET_TX_RING, encodeTpacketReq(rings.tx), 16), 'setsockopt', 'PACKET_TX_RING');
    }
    const sll = Buffer.alloc(20);
    sll.writeUInt16LE(AF_PACKET, 0);
    sll.writeUInt16LE(ETH_P_ALL_BE, 2);
    sll.writeInt32LE(index, 4);
    check(bindRaw(fd, sll, 20), 'bind', ifname);
    if (promiscuous) {
      const mreq = Buffer.alloc(16); // struct packet_mreq { int ifindex; u16 type; u16 alen; u8 addr[8]; }
      mreq.writeInt32LE(index, 0);
      mreq.writeUInt16LE(PACKET_MR_PROMISC, 4);
      check(setsockoptRaw(fd, SOL_PACKET, PACKET_ADD_MEMBERSHIP, mreq, 16), 'setsockopt', 'PACKET_ADD_MEMBERSHIP promiscuous');
    }
    return fd;
  } catch (e) {
    closeFd(fd);
    throw e;
  }
}

/**
 * A send-only packet socket on `ifname` (protocol 0: it receives nothing),
 * with PACKET_VNET_HDR and no ring: the uplink's way out for frames bigger
 * than its TX ring's slots (GSO frames up to 64 KiB), since a socket with a
 * TX ring sends every write() through the ring.
 */
export function openPacketSender(ifname: string): number {
  const index = ifIndex(ifname);
  if (index === 0) throw new Error(`no interface ${ifname}`);
  const fd = check(c.socket(AF_PACKET, SOCK_RAW | SOCK_NONBLOCK | SOCK_CLOEXEC, 0), 'socket', 'AF_PACKET');
  try {
    setInt(fd, SOL_PACKET, PACKET_VNET_HDR, 1, 'PACKET_VNET_HDR');
    // No PACKET_QDISC_BYPASS here (unlike the ring socket): the direct path
    // drops a GSO skb the device cannot take whole (no TSO, tx checksumming
    // off, an ECN or IPv6 GSO type it lacks) with ENOBUFS instead of
    // segmenting it; through the qdisc path the kernel segments it in software.
    const sll = Buffer.alloc(20);
    sll.writeUInt16LE(AF_PACKET, 0);
    sll.writeInt32LE(index, 4);
    check(bindRaw(fd, sll, 20), 'bind', ifname);
    return fd;
  } catch (e) {
    closeFd(fd);
    throw e;
  }
}

/** AF_UNIX SOCK_DGRAM pair: one frame per datagram, what QEMU's `-netdev socket,fd=` expects of a datagram socket. */
export function dgramPair(): [number, number] {
  const sv = [0, 0];
  check(c.socketpair(1, 2 | SOCK_CLOEXEC, 0, sv), 'socketpair', 'SOCK_DGRAM');
  return [sv[0]!, sv[1]!];
}
