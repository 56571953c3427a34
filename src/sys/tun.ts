// tun/tap character device: create taps (what qemu-bridge-helper does with
// TUNSETIFF) and query an fd the way QEMU and libvirt check it (TUNGETIFF).
import { c, check, closeFd, O_CLOEXEC, O_RDWR, SysError } from './libc.js';

const TUNSETIFF = 0x400454ca;
const TUNGETIFF = 0x800454d2;
const TUNGETFEATURES = 0x800454cf;
const TUNSETVNETHDRSZ = 0x400454d8;
const TUNSETOFFLOAD = 0x400454d0;
// TUNSETOFFLOAD bits: what the kernel may hand us (partial checksums, TSO frames).
export const TUN_F_CSUM = 0x01;
export const TUN_F_TSO4 = 0x02;
export const TUN_F_TSO6 = 0x04;
export const TUN_F_TSO_ECN = 0x08;
const TUNSETPERSIST = 0x400454cb;

export const IFF_TAP = 0x0002;
export const IFF_MULTI_QUEUE = 0x0100;
const IFF_NO_PI = 0x1000;
export const IFF_VNET_HDR = 0x4000;

export const DEFAULT_TUN_DEVICE = '/dev/net/tun';
const IFNAMSIZ = 16;

function ifreq(name: string, flags: number): Buffer {
  const r = Buffer.alloc(40);
  r.write(name, 0, IFNAMSIZ - 1, 'latin1');
  r.writeUInt16LE(flags, 16);
  return r;
}

function ifreqName(r: Buffer): string {
  const end = r.indexOf(0);
  return r.toString('latin1', 0, end < 0 || end > IFNAMSIZ ? IFNAMSIZ : end);
}

export interface Tap {
  fd: number;
  name: string;
  flags: number;
  vnetHdr: boolean;
}

export interface TapRequest {
  /** Interface name or pattern with %d (kernel picks the number). */
  name?: string;
  /** Ask for IFF_VNET_HDR when the kernel offers it (QEMU's --use-vnet). */
  vnetHdr?: boolean;
  multiQueue?: boolean;
  /** Path of the tun clone device; tests and odd hosts may point elsewhere. */
  tunDevice?: string;
  /**
   * Make it persistent at once. Callers that journal durable objects should
   * rather journal first and then call setPersist (see there).
   */
  persist?: boolean;
}

/** Opens the clone device; errors keep their errno so callers can say "no tun" vs "no permission". */
function openTunDevice(path = DEFAULT_TUN_DEVICE): number {
  return check(c.open(path, O_RDWR | O_CLOEXEC), 'open', path);
}

export function tunFeatures(fd: number): number {
  const v = Buffer.alloc(4);
  check(c.ioctlPtr(fd, TUNGETFEATURES, v), 'ioctl', 'TUNGETFEATURES');
  return v.readUInt32LE(0);
}

/**
 * Creates a non-persistent tap: it disappears when the last fd on it closes,
 * so a crash between here and QEMU receiving the fd leaks nothing.
 */
export function createTap(req: TapRequest = {}): Tap {
  const fd = openTunDevice(req.tunDevice);
  try {
    let flags = IFF_TAP | IFF_NO_PI;
    if (req.vnetHdr && (tunFeatures(fd) & IFF_VNET_HDR)) flags |= IFF_VNET_HDR;
    if (req.multiQueue) flags |= IFF_MULTI_QUEUE;
    const name = tunSetIff(fd, req.name ?? 'tap%d', flags);
    // QEMU negotiates the header size itself; 12 bytes matches virtio 1.0
    // and mergeable buffers, which is what our own data path uses too.
    if (flags & IFF_VNET_HDR) setVnetHdrSize(fd, VNET_HDR_LEN);
    if (req.persist) setPersist(fd, true);
    return { fd, name, flags, vnetHdr: (flags & IFF_VNET_HDR) !== 0 };
  } catch (e) {
    closeFd(fd);
    throw e;
  }
}

/** virtio-net header with num_buffers (virtio 1.0 / mergeable RX buffers). */
export const VNET_HDR_LEN = 12;

/** TUNSETIFF: sets a tun/tap/macvtap fd's flags; returns the interface name the kernel chose. */
export function tunSetIff(fd: number, name: string, flags: number): string {
  const r = ifreq(name, flags);
  check(c.ioctlPtr(fd, TUNSETIFF, r), 'ioctl', 'TUNSETIFF');
  return ifreqName(r);
}

export function setVnetHdrSize(fd: number, size: number): void {
  const sz = Buffer.alloc(4);
  sz.writeInt32LE(size, 0);
  check(c.ioctlPtr(fd, TUNSETVNETHDRSZ, sz), 'ioctl', 'TUNSETVNETHDRSZ');
}

/** TUNSETOFFLOAD: the offloads (TUN_F_*) a tap with IFF_VNET_HDR takes from the kernel. */
export function setTapOffload(fd: number, flags: number): void {
  check(c.ioctlInt(fd, TUNSETOFFLOAD, flags), 'ioctl', 'TUNSETOFFLOAD');
}

/**
 * Keeps the tap when its last fd closes (for `up`, where QEMU opens it by name
 * later). Separate from createTap so callers can journal the tap first: a
 * crash before this call leaves nothing, since the fd dies with the process.
 */
export function setPersist(fd: number, on: boolean): void {
  check(c.ioctlInt(fd, TUNSETPERSIST, on ? 1 : 0), 'ioctl', 'TUNSETPERSIST');
}

/** TUNGETIFF: what QEMU and libvirt call on a received fd; null when the fd is no tun/tap. */
export function tunGetIff(fd: number): { name: string; flags: number } | null {
  const r = Buffer.alloc(40);
  try {
    check(c.ioctlPtr(fd, TUNGETIFF, r), 'ioctl', 'TUNGETIFF');
  } catch (e) {
    if (e instanceof SysError) return null;
    throw e;
  }
  return { name: ifreqName(r), flags: r.readUInt16LE(16) };
}
