// /dev/vhost-net ioctls: what QEMU does with the vhost fd we hand it, so the
// kernel lab can drive vhost-net itself (our virtqueue driver in the guest's
// place) and prove the vhost-kernel transport's fds move frames. Test code:
// the product only opens /dev/vhost-net and hands the fd to QEMU. The struct
// encoders are pure (unit-tested); the ioctls are thin.
import { c, check } from '../../src/sys/libc.js';

// _IO/_IOR/_IOW(VHOST_VIRTIO = 0xAF, nr, type) from <linux/vhost.h>.
const ioc = (dir: number, nr: number, size: number): number => ((dir << 30) | (size << 16) | (0xaf << 8) | nr) >>> 0;
const W = 1, R = 2;
export const VHOST = {
  GET_FEATURES: ioc(R, 0x00, 8),
  SET_FEATURES: ioc(W, 0x00, 8),
  SET_OWNER: ioc(0, 0x01, 0),
  SET_MEM_TABLE: ioc(W, 0x03, 8),
  SET_VRING_NUM: ioc(W, 0x10, 8),
  SET_VRING_ADDR: ioc(W, 0x11, 40),
  SET_VRING_BASE: ioc(W, 0x12, 8),
  GET_VRING_BASE: ioc(W | R, 0x12, 8),
  SET_VRING_KICK: ioc(W, 0x20, 8),
  SET_VRING_CALL: ioc(W, 0x21, 8),
  NET_SET_BACKEND: ioc(W, 0x30, 8),
} as const;

export interface VhostRegion { gpa: bigint; size: bigint; userAddr: bigint }

/** struct vhost_memory: u32 nregions, u32 padding, then {gpa, size, userspace_addr, flags_padding} each. */
export function encodeMemTable(regions: readonly VhostRegion[]): Buffer {
  const b = Buffer.alloc(8 + 32 * regions.length);
  b.writeUInt32LE(regions.length, 0);
  regions.forEach((r, i) => {
    const o = 8 + 32 * i;
    b.writeBigUInt64LE(r.gpa, o);
    b.writeBigUInt64LE(r.size, o + 8);
    b.writeBigUInt64LE(r.userAddr, o + 16);
  });
  return b;
}

/** struct vhost_vring_state / vhost_vring_file: u32 index, then u32 num or s32 fd. */
export function encodeIndexValue(index: number, value: number): Buffer {
  const b = Buffer.alloc(8);
  b.writeUInt32LE(index, 0);
  b.writeInt32LE(value, 4);
  return b;
}

/** struct vhost_vring_addr: index, flags, desc, used, avail, log (user addresses). */
export function encodeVringAddr(index: number, desc: bigint, used: bigint, avail: bigint): Buffer {
  const b = Buffer.alloc(40);
  b.writeUInt32LE(index, 0);
  b.writeBigUInt64LE(desc, 8);
  b.writeBigUInt64LE(used, 16);
  b.writeBigUInt64LE(avail, 24);
  return b;
}

const ioctl = (fd: number, req: number, arg: Buffer | null, what: string): void => {
  check(arg ? c.ioctlPtr(fd, req, arg) : c.ioctlInt(fd, req, 0), 'ioctl', what);
};

export const vhostNet = {
  setOwner: (fd: number): void => ioctl(fd, VHOST.SET_OWNER, null, 'VHOST_SET_OWNER'),
  getFeatures(fd: number): bigint {
    const b = Buffer.alloc(8);
    ioctl(fd, VHOST.GET_FEATURES, b, 'VHOST_GET_FEATURES');
    return b.readBigUInt64LE(0);
  },
  setFeatures(fd: number, features: bigint): void {
    const b = Buffer.alloc(8);
    b.writeBigUInt64LE(features, 0);
    ioctl(fd, VHOST.SET_FEATURES, b, 'VHOST_SET_FEATURES');
  },
  setMemTable: (fd: number, regions: readonly VhostRegion[]): void => ioctl(fd, VHOST.SET_MEM_TABLE, encodeMemTable(regions), 'VHOST_SET_MEM_TABLE'),
  setVringNum: (fd: number, index: number, num: number): void => ioctl(fd, VHOST.SET_VRING_NUM, encodeIndexValue(index, num), 'VHOST_SET_VRING_NUM'),
  setVringBase: (fd: number, index: number, base: number): void => ioctl(fd, VHOST.SET_VRING_BASE, encodeIndexValue(index, base), 'VHOST_SET_VRING_BASE'),
  setVringAddr: (fd: number, index: number, desc: bigint, used: bigint, avail: bigint): void =>
    ioctl(fd, VHOST.SET_VRING_ADDR, encodeVringAddr(index, desc, used, avail), 'VHOST_SET_VRING_ADDR'),
  setVringKick: (fd: number, index: number, eventfd: number): void => ioctl(fd, VHOST.SET_VRING_KICK, encodeIndexValue(index, eventfd), 'VHOST_SET_VRING_KICK'),
  setVringCall: (fd: number, index: number, eventfd: number): void => ioctl(fd, VHOST.SET_VRING_CALL, encodeIndexValue(index, eventfd), 'VHOST_SET_VRING_CALL'),
  /** Attaches a tap/macvtap fd to ring `index` (-1 detaches). */
  setBackend: (fd: number, index: number, tapFd: number): void => ioctl(fd, VHOST.NET_SET_BACKEND, encodeIndexValue(index, tapFd), 'VHOST_NET_SET_BACKEND'),
};
