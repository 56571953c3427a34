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
//   frame through a socket buffer.
//   Plain frames leave through an AF_XDP socket on DEV's queue 0 where the
//   kernel gives us one (`--uplink-tx auto`, the default): measured on a
//   veth, sending through AF_XDP moved 64-byte frames about twice as fast as
//   a TPACKET TX ring (sys/xsk.ts, docs/BENCHMARKS.md). Receiving stays on
//   the packet ring: AF_XDP would need a BPF program on DEV, which hands a
//   frame to our socket or to the host's stack, never both (the host's own
//   use of DEV beside us would end). Frames with a vnet header (offloads)
//   keep the TX ring, which carries it; AF_XDP has no such header.
// - `--br BR`: a tap of ours attached to bridge BR (what `--br` always did,
//   now one tap for the whole switch instead of one per port).
// With offloads on (the default), both carry a virtio_net_hdr with every
// frame (PACKET_VNET_HDR; IFF_VNET_HDR + TUNSETOFFLOAD): a guest's TSO frame
// or partial checksum goes to the kernel as it is (it segments or checksums
// only if the device cannot), and a GSO/partial-checksum skb from the host
// side comes to us whole, for guests that take it (switch/offload.ts).
import { NotFoundError, UsageError } from '../errors.js';
import { linkKind, linkShow } from '../net/ip.js';
import { closeFd } from '../sys/libc.js';
import { bridgeAddPort, ifIndex, setUp } from '../sys/netdev.js';
import { openPacketSender, openPacketSocket, type PacketRings } from '../sys/packet.js';
import { openXskSender, type XskTxInfo } from '../sys/xsk.js';
import type { UplinkTx } from './config.js';
import { PACKET_VNET_LEN, ringGeometry } from '../sys/tpacket.js';
import { createTap, setTapOffload, setVnetHdrSize, TUN_F_CSUM, TUN_F_TSO4, TUN_F_TSO6, TUN_F_TSO_ECN } from '../sys/tun.js';
import { setNonBlocking } from '../sys/unix-socket.js';

// 4 MiB of skb truesize: ~1500 full-size or ~5000 small frames (only used
// by frames the kernel copies aside; the rings below hold the rest).
const UPLINK_RCVBUF = 4 << 20;
// Ring memory per direction: 4096 slots of 2 KiB at a 1500-byte MTU (a burst
// of that many frames waits without loss), fewer and bigger slots for jumbo
// frames. Slots are sized for the device's MTU when the switch starts.
const RING_BYTES = 8 << 20;
const RING_MIN_FRAMES = 256;
// With a vnet header the slots stay MTU-sized (and hold the header too):
// GSO frames, up to 64 KiB, go around the rings instead. Received, the
// kernel marks the slot TP_STATUS_COPY and queues the whole frame on the
// socket (read() then); sent, through a second, ring-less packet socket
// (sys/packet.ts openPacketSender) after the ring's queued frames. 64 KiB
// slots for everything measured slower on small frames (a slot per 64 KiB:
// every slot header in the same cache sets, a page per frame) and cost
// 40 MiB of kernel memory per switch.
// What the tap may hand us: the TCP offloads the switch validates, passes on
// and can segment. Not USO (TUN_F_USO4/6): the switch neither offers UDP
// segmentation to guests nor can do it in software, so the kernel would hand
// us UDP GSO frames only to be dropped; without it the kernel segments them.
const TAP_OFFLOADS = TUN_F_CSUM | TUN_F_TSO4 | TUN_F_TSO6 | TUN_F_TSO_ECN;

export interface Uplink {
  fd: number;
  kind: 'packet' | 'tap';
  /** The device we read and write: DEV itself, or our tap. */
  ifname: string;
  /** `--uplink` DEV or `--br` BR, as given. */
  device: string;
  /** The packet socket's rings (the data path maps them), none for a tap. */
  rings?: PacketRings;
  /** Frames carry a virtio_net_hdr of PACKET_VNET_LEN bytes both ways (offloads on). */
  vnetHdr: boolean;
  /** The send-only packet socket for frames bigger than a TX slot (offloads on), or -1. */
  senderFd: number;
  /** The AF_XDP socket plain frames leave through, or null (the TX ring sends them). */
  xsk: XskTxInfo | null;
  /** How frames leave, for the log: "AF_XDP (copy mode)", or the TX ring and why. */
  txPath: string;
  close(): void;
}


// UMEM: 8 MiB, as the TX ring: 4096 frames of 2 KiB, or 2048 of 4 KiB for a
// device with a bigger MTU (frames above 4 KiB take the TX ring).
const XSK_BYTES = 8 << 20;

function openXsk(dev: string, maxFrame: number, tx: UplinkTx): { xsk: XskTxInfo | null; txPath: string } {
  if (tx === 'packet') return { xsk: null, txPath: 'TX ring (--uplink-tx packet)' };
  const frameSize = maxFrame <= 2048 ? 2048 : 4096;
  try {
    const xsk = openXskSender(dev, XSK_BYTES / frameSize, frameSize);
    return { xsk, txPath: 'AF_XDP (copy mode) for plain frames' };
  } catch (e) {
    if (tx === 'xdp') throw e;
    return { xsk: null, txPath: `TX ring (no AF_XDP: ${(e as Error).message})` };
  }
}

export function openUplink(opts: { dev?: string; bridge?: string; offloads?: boolean; tx?: UplinkTx }): Uplink | null {
  const offloads = opts.offloads ?? true;
  if (opts.dev && opts.bridge) throw new UsageError('--uplink and --br are exclusive: --br BR is itself an uplink (a tap on bridge BR)', "run 'qemu-net-helper vhost-user serve --help'");
  if (opts.bridge) {
    const br = opts.bridge;
    if (ifIndex(br) === 0) throw new NotFoundError(`bridge '${br}' does not exist`, `create it ('ip link add ${br} type bridge') or pass another --br`);
    const tap = createTap({ name: 'vhu%d', vnetHdr: offloads });
    try {
      if (tap.vnetHdr) {
        // The packet socket's header size: one codec for both kinds.
        setVnetHdrSize(tap.fd, PACKET_VNET_LEN);
        setTapOffload(tap.fd, TAP_OFFLOADS);
      }
      setNonBlocking(tap.fd, true);
      bridgeAddPort(br, tap.name);
      setUp(tap.name);
    } catch (e) {
      closeFd(tap.fd);
      throw e;
    }
    return { fd: tap.fd, kind: 'tap', ifname: tap.name, device: br, vnetHdr: tap.vnetHdr, senderFd: -1, xsk: null, txPath: 'tap', close: () => closeFd(tap.fd) };
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
    const vnet = offloads ? PACKET_VNET_LEN : 0;
    const rings = { rx: ringGeometry(maxFrame, RING_BYTES, RING_MIN_FRAMES, vnet), tx: ringGeometry(maxFrame, RING_BYTES, RING_MIN_FRAMES, vnet) };
    const fd = openPacketSocket(dev, true, UPLINK_RCVBUF, rings, offloads);
    let senderFd = -1;
    let out: ReturnType<typeof openXsk>;
    try {
      if (offloads) senderFd = openPacketSender(dev);
      out = openXsk(dev, maxFrame, opts.tx ?? 'auto');
    } catch (e) {
      closeFd(fd);
      if (senderFd >= 0) closeFd(senderFd);
      throw e;
    }
    const { xsk, txPath } = out;
    const close = (): void => {
      closeFd(fd);
      if (senderFd >= 0) closeFd(senderFd);
      if (xsk) { closeFd(xsk.fd); closeFd(xsk.umemFd); }
    };
    return { fd, kind: 'packet', ifname: dev, device: dev, rings, vnetHdr: offloads, senderFd, xsk, txPath, close };
  }
  return null;
}
