// The switch's uplink port: a host network device the switch reaches the
// outside through. Two kinds, one fd each:
// - `--uplink DEV`: an AF_PACKET socket bound to DEV, promiscuous, not seeing
//   its own transmissions. Any ethernet-like device works as it is (a NIC, a
//   veth, a bond), no bridge is needed, and the kernel's own stack on DEV
//   keeps working beside us. Chosen over "a tap of ours on a bridge with
//   DEV" because that needs a bridge the user may not have (and would carry
//   every frame through two devices); the measured rates of both are in the
//   README. Frames move through mmap'ed TPACKET_V2 rings (dataplane/
//   uplink-io.ts): no syscall per received frame, one send() per batch sent.
//   V2 rather than V3 for RX: a V3 block reaches user space only when it is
//   full or its retire timer (milliseconds) fires, which a ping or a TCP
//   handshake through the uplink would wait for; a V2 slot is ours as soon
//   as the kernel wrote it, and a busy poller batches by itself. Not
//   measured, chosen by what they need: recvmmsg/sendmmsg still copy each
//   frame through a socket buffer; AF_XDP needs a BPF program on DEV and
//   hands a frame to our socket or to the host's stack, never both (the
//   host's own use of DEV beside us would end).
// - `--br BR`: a tap of ours attached to bridge BR (what `--br` always did,
//   now one tap for the whole switch instead of one per port).
import { NotFoundError, UsageError } from '../errors.js';
import { linkKind, linkShow } from '../net/ip.js';
import { closeFd } from '../sys/libc.js';
import { bridgeAddPort, ifIndex, setUp } from '../sys/netdev.js';
import { openPacketSocket, type PacketRings } from '../sys/packet.js';
import { ringGeometry } from '../sys/tpacket.js';
import { createTap } from '../sys/tun.js';
import { setNonBlocking } from '../sys/unix-socket.js';

// 4 MiB of skb truesize: ~1500 full-size or ~5000 small frames (only used
// by frames the kernel copies aside; the rings below hold the rest).
const UPLINK_RCVBUF = 4 << 20;
// Ring memory per direction: 4096 slots of 2 KiB at a 1500-byte MTU (a burst
// of that many frames waits without loss), fewer and bigger slots for jumbo
// frames. Slots are sized for the device's MTU when the switch starts.
const RING_BYTES = 8 << 20;
const RING_MIN_FRAMES = 256;

export interface Uplink {
  fd: number;
  kind: 'packet' | 'tap';
  /** The device we read and write: DEV itself, or our tap. */
  ifname: string;
  /** `--uplink` DEV or `--br` BR, as given. */
  device: string;
  /** The packet socket's rings (the data path maps them), none for a tap. */
  rings?: PacketRings;
  close(): void;
}

export function openUplink(opts: { dev?: string; bridge?: string }): Uplink | null {
  if (opts.dev && opts.bridge) throw new UsageError('--uplink and --br are exclusive: --br BR is itself an uplink (a tap on bridge BR)', "run 'qemu-net-helper vhost-user serve --help'");
  if (opts.bridge) {
    const br = opts.bridge;
    if (ifIndex(br) === 0) throw new NotFoundError(`bridge '${br}' does not exist`, `create it ('ip link add ${br} type bridge') or pass another --br`);
    const tap = createTap({ name: 'vhu%d' });
    try {
      setNonBlocking(tap.fd, true);
      bridgeAddPort(br, tap.name);
      setUp(tap.name);
    } catch (e) {
      closeFd(tap.fd);
      throw e;
    }
    return { fd: tap.fd, kind: 'tap', ifname: tap.name, device: br, close: () => closeFd(tap.fd) };
  }
  if (opts.dev) {
    const dev = opts.dev;
    const link = linkShow(dev);
    if (!link) throw new NotFoundError(`uplink device '${dev}' does not exist`, 'pass an existing ethernet-like device to --uplink');
    if (linkKind(link) === 'bridge') {
      throw new NotFoundError(`uplink device '${dev}' is a bridge: a packet socket on it would miss frames the bridge switches between its ports`, `use --br ${dev} (a tap of ours on the bridge)`);
    }
    // Slots for a frame of the MTU plus Ethernet and VLAN headers.
    const maxFrame = Math.min(65535, Math.max(1500, link.mtu) + 18);
    const rings = { rx: ringGeometry(maxFrame, RING_BYTES, RING_MIN_FRAMES), tx: ringGeometry(maxFrame, RING_BYTES, RING_MIN_FRAMES) };
    const fd = openPacketSocket(dev, true, UPLINK_RCVBUF, rings);
    return { fd, kind: 'packet', ifname: dev, device: dev, rings, close: () => closeFd(fd) };
  }
  return null;
}
