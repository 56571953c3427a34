// AF_XDP sockets (linux/if_xdp.h) as the switch uplink's way out: a socket
// bound to one queue of a device, with a UMEM (frames we write), a TX ring
// (descriptors we produce, the kernel consumes) and a completion ring (frame
// addresses the kernel hands back once sent). Send only: the uplink keeps
// receiving through its AF_PACKET ring, because receiving through AF_XDP needs
// a BPF program on the device that takes every frame away from the host's own
// stack (packet.ts and vhost-user/uplink.ts say why that matters).
// Why AF_XDP for sending: measured on a veth, DPDK's own net_af_xdp PMD moved
// 0.99 Mpps of 64-byte frames where its net_af_packet moved 0.51 and ours
// (TPACKET_V2 TX ring) 0.59 (docs/BENCHMARKS.md): the kernel's per-frame
// work behind a TPACKET TX ring is the uplink's limit, not our loop.
// The UMEM is a memfd: the data-path worker maps it (and the rings, through
// the socket) in its own thread; the kernel pinned its pages when it was
// registered, so where it is mapped does not matter to the kernel.
// Copy mode always (XDP_COPY: the kernel builds an skb per frame, on any
// driver): binding a zero-copy socket makes some NIC drivers rebuild the
// queue's rings, a hiccup for the host's own traffic on that device, and no
// zero-copy hardware was at hand to verify it.
import { c, check, closeFd, koffi, O_CLOEXEC as SOCK_CLOEXEC } from './libc.js';
import { mapShared, unmap } from './mmap.js';
import { ifIndex } from './netdev.js';

const lib = koffi.load('libc.so.6');
const bindRaw = lib.func('int bind(int fd, const void *addr, uint32_t len)');
const setsockoptRaw = lib.func('int setsockopt(int fd, int level, int name, const void *val, uint32_t len)');
const sendtoRaw = lib.func('intptr_t sendto(int fd, const void *buf, size_t len, int flags, const void *addr, uint32_t alen)');
const memfdCreate = lib.func('int memfd_create(const char *name, unsigned int flags)');
const ftruncateRaw = lib.func('int ftruncate(int fd, int64_t len)');

const AF_XDP = 44;
const SOCK_RAW = 3;
const SOL_XDP = 283;
const XDP_MMAP_OFFSETS = 1;
const XDP_TX_RING = 3;
const XDP_UMEM_REG = 4;
const XDP_UMEM_FILL_RING = 5;
const XDP_UMEM_COMPLETION_RING = 6;
const XDP_COPY = 2;
const MFD_CLOEXEC = 1;
const MSG_DONTWAIT = 0x40;
/** mmap offsets of the rings on the socket. */
export const XDP_PGOFF_TX_RING = 0x80000000;
export const XDP_UMEM_PGOFF_COMPLETION_RING = 0x180000000;
/** struct xdp_desc: u64 addr, u32 len, u32 options. */
export const XDP_DESC_LEN = 16;
// The fill ring must exist for bind (the kernel checks both UMEM rings) but a
// send-only socket never fills it: the smallest ring.
const FILL_RING = 2;

/** Byte offsets of one ring's producer index, consumer index and entries in its mapping (struct xdp_ring_offset). */
export interface XskRingOffsets { producer: number; consumer: number; desc: number }

/** What the worker needs to map and drive the socket (plain data: it crosses to the worker thread). */
export interface XskTxInfo {
  fd: number;
  /** The UMEM's memfd: frames * frameSize bytes. */
  umemFd: number;
  /** TX ring entries = completion ring entries = UMEM frames (a power of two). */
  frames: number;
  /** Bytes per UMEM frame (a power of two, 2048 or 4096): the largest frame this socket sends. */
  frameSize: number;
  tx: XskRingOffsets;
  cq: XskRingOffsets;
}

/** Bytes to map for a ring of `entries` entries of `entryLen` bytes. */
export const xskRingBytes = (off: XskRingOffsets, entries: number, entryLen: number): number => off.desc + entries * entryLen;

function setInt(fd: number, name: number, value: number, what: string): void {
  const v = Buffer.alloc(4);
  v.writeInt32LE(value);
  check(setsockoptRaw(fd, SOL_XDP, name, v, 4), 'setsockopt', what);
}

/**
 * An AF_XDP socket bound to queue 0 of `ifname`, send only, with a UMEM of
 * `frames` frames of `frameSize` bytes, in copy mode. Throws a SysError where AF_XDP is not
 * to be had (kernel without it: EAFNOSUPPORT; no CAP_NET_RAW: EPERM; the
 * queue taken by another AF_XDP socket: EBUSY): the caller falls back.
 */
export function openXskSender(ifname: string, frames: number, frameSize: number): XskTxInfo {
  if (!(frames >= 2 && (frames & (frames - 1)) === 0)) throw new RangeError(`AF_XDP ring of ${frames} entries: a power of two >= 2 is needed`);
  if (frameSize !== 2048 && frameSize !== 4096) throw new RangeError(`AF_XDP frame of ${frameSize} bytes: 2048 or 4096`);
  const index = ifIndex(ifname);
  if (index === 0) throw new Error(`no interface ${ifname}`);
  const fd = check(c.socket(AF_XDP, SOCK_RAW | SOCK_CLOEXEC, 0), 'socket', 'AF_XDP');
  let umemFd = -1;
  try {
    umemFd = check(memfdCreate('qnh-xsk-umem', MFD_CLOEXEC), 'memfd_create', 'AF_XDP UMEM');
    const bytes = frames * frameSize;
    check(ftruncateRaw(umemFd, bytes), 'ftruncate', 'AF_XDP UMEM');
    // Mapped here only to give the kernel an address to pin; the worker maps the memfd itself.
    const m = mapShared(umemFd, bytes);
    try {
      // struct xdp_umem_reg: u64 addr, u64 len, u32 chunk_size, u32 headroom, u32 flags, u32 tx_metadata_len.
      const reg = Buffer.alloc(32);
      reg.writeBigUInt64LE(BigInt(koffi.address(m.ptr)), 0);
      reg.writeBigUInt64LE(BigInt(bytes), 8);
      reg.writeUInt32LE(frameSize, 16);
      check(setsockoptRaw(fd, SOL_XDP, XDP_UMEM_REG, reg, 32), 'setsockopt', 'XDP_UMEM_REG');
    } finally {
      unmap(m);
    }
    setInt(fd, XDP_UMEM_FILL_RING, FILL_RING, 'XDP_UMEM_FILL_RING');
    setInt(fd, XDP_UMEM_COMPLETION_RING, frames, 'XDP_UMEM_COMPLETION_RING');
    setInt(fd, XDP_TX_RING, frames, 'XDP_TX_RING');
    // struct xdp_mmap_offsets: rx, tx, fr, cr, each {u64 producer, consumer, desc, flags}.
    const off = Buffer.alloc(128);
    const len = [128];
    check(c.getsockopt(fd, SOL_XDP, XDP_MMAP_OFFSETS, off, len), 'getsockopt', 'XDP_MMAP_OFFSETS');
    if (len[0] !== 128) throw new Error(`XDP_MMAP_OFFSETS of ${len[0]} bytes: a kernel before 5.4, not supported`);
    const ring = (at: number): XskRingOffsets => ({
      producer: Number(off.readBigUInt64LE(at)), consumer: Number(off.readBigUInt64LE(at + 8)), desc: Number(off.readBigUInt64LE(at + 16)),
    });
    // struct sockaddr_xdp: u16 family, u16 flags, u32 ifindex, u32 queue, u32 shared fd.
    const sxdp = Buffer.alloc(16);
    sxdp.writeUInt16LE(AF_XDP, 0);
    sxdp.writeUInt16LE(XDP_COPY, 2);
    sxdp.writeUInt32LE(index, 4);
    check(bindRaw(fd, sxdp, 16), 'bind', `AF_XDP ${ifname} queue 0`);
    return { fd, umemFd, frames, frameSize, tx: ring(32), cq: ring(96) };
  } catch (e) {
    if (umemFd >= 0) closeFd(umemFd);
    closeFd(fd);
    throw e;
  }
}

/**
 * Asks the kernel to send what the TX ring holds, without waiting: in copy
 * mode it sends there and then, a bounded batch per call (32 frames in Linux
 * 6.x), and says EAGAIN when more is left; 0 on success, else the errno.
 */
export function kickXsk(fd: number): number {
  return Number(sendtoRaw(fd, null, 0, MSG_DONTWAIT, null, 0)) >= 0 ? 0 : koffi.errno();
}

/** The UMEM and both rings, mapped into the calling thread. */
export interface XskMaps { umem: ArrayBuffer; tx: ArrayBuffer; cq: ArrayBuffer; close(): void }

export function mapXsk(info: XskTxInfo): XskMaps {
  const umem = mapShared(info.umemFd, info.frames * info.frameSize);
  const maps = [umem];
  try {
    const tx = mapShared(info.fd, xskRingBytes(info.tx, info.frames, XDP_DESC_LEN), XDP_PGOFF_TX_RING);
    maps.push(tx);
    const cq = mapShared(info.fd, xskRingBytes(info.cq, info.frames, 8), XDP_UMEM_PGOFF_COMPLETION_RING);
    maps.push(cq);
    return { umem: umem.buffer, tx: tx.buffer, cq: cq.buffer, close: () => { for (const m of maps) unmap(m); } };
  } catch (e) {
    for (const m of maps) unmap(m);
    throw e;
  }
}
