// The syscalls the test front-end needs that the project does not bind (memfd,
// pipes, eventfds, dup) and a sendmsg/recvmsg with SCM_RIGHTS of its own.
import { addressOf, c, check, closeFd, koffi } from '../../src/sys/libc.js';

// ---- libc bits the project does not bind ---------------------------------

const libc = koffi.load('libc.so.6');
const memfdCreateRaw = libc.func('int memfd_create(const char *name, unsigned int flags)');
const ftruncateRaw = libc.func('int ftruncate(int fd, int64_t len)');
const pipe2Raw = libc.func('int pipe2(_Out_ int *fds, int flags)');
const eventfdRaw = libc.func('int eventfd(unsigned int initval, int flags)');
const dupRaw = libc.func('int dup(int fd)');
const MFD_CLOEXEC = 1;
const MFD_ALLOW_SEALING = 2;
const O_CLOEXEC = 0o2000000;
const EFD_NONBLOCK = 0o4000;
const EFD_CLOEXEC = 0o2000000;

/**
 * A memfd of `size` bytes. `sealable` (default): created with
 * MFD_ALLOW_SEALING, as QEMU does (the back-end seals it against shrinking);
 * false: as DPDK's --no-huge memory, which nobody can ever seal.
 */
export function memfdCreate(name: string, size: number, sealable = true): number {
  const fd = check(memfdCreateRaw(name, MFD_CLOEXEC | (sealable ? MFD_ALLOW_SEALING : 0)), 'memfd_create');
  try {
    check(ftruncateRaw(fd, size), 'ftruncate');
  } catch (e) {
    closeFd(fd);
    throw e;
  }
  return fd;
}

export function ftruncate(fd: number, size: number): void {
  check(ftruncateRaw(fd, size), 'ftruncate');
}

/**
 * [read end, write end]; blocking unless asked (O_NONBLOCK lives in the open
 * file description the receiver shares: the sender chooses it).
 */
export function pipe(nonBlocking = false): [number, number] {
  const fds = [0, 0];
  check(pipe2Raw(fds, O_CLOEXEC | (nonBlocking ? 0o4000 : 0)), 'pipe2');
  return [fds[0]!, fds[1]!];
}

/**
 * An eventfd. `blocking` and `initial` let a hostile test hand over one whose
 * write blocks (counter at its maximum), which the back-end cannot tell apart
 * from a normal call fd.
 */
export function makeEventfd(opts: { blocking?: boolean; initial?: number } = {}): number {
  return check(eventfdRaw(opts.initial ?? 0, EFD_CLOEXEC | (opts.blocking ? 0 : EFD_NONBLOCK)), 'eventfd');
}

export function dup(fd: number): number {
  return check(dupRaw(fd), 'dup');
}

/** Writes a raw u64 into an eventfd (e.g. 0xfffffffffffffffe: the next +1 blocks). */
export function eventfdAdd(fd: number, value: bigint): void {
  const b = Buffer.alloc(8);
  b.writeBigUInt64LE(value);
  check(c.write(fd, b, 8), 'write', 'eventfd');
}

// ---- sendmsg/recvmsg that keep their buffers alive ------------------------
//
// Deliberately not src/sys/unix-fd.ts's sendWithFds/recvWithFds: the driver
// must not share the transport code under test. (Those once let the iovec be
// garbage-collected before the syscall read it, fixed in dc405cb; sends then
// failed with EFAULT or sent garbage under GC pressure from large mappings
// such as our guest memory.) One long-lived scratch block holds msghdr,
// iovec and control, and the data buffer is used after the call.

const SCM_RIGHTS = 1;
const SOL_SOCKET = 1;
const MSG_NOSIGNAL = 0x4000;
const MSG_CMSG_CLOEXEC = 0x40000000;
const MAX_FDS = 64;
// msghdr at 0 (56 bytes), iovec at 64 (16), control at 128 (16 + 4 x MAX_FDS).
const scratch = Buffer.alloc(128 + 16 + 4 * MAX_FDS);
const scratchAddr = addressOf(scratch);

function prepare(data: Uint8Array, controlLen: number): void {
  scratch.fill(0, 0, 128);
  scratch.writeBigUInt64LE(addressOf(data), 64);
  scratch.writeBigUInt64LE(BigInt(data.length), 72);
  scratch.writeBigUInt64LE(scratchAddr + 64n, 16);
  scratch.writeBigUInt64LE(1n, 24);
  if (controlLen) {
    scratch.writeBigUInt64LE(scratchAddr + 128n, 32);
    scratch.writeBigUInt64LE(BigInt(controlLen), 40);
  }
}

/** One sendmsg of `data` with `fds` attached (SCM_RIGHTS). Throws SysError. */
export function sendmsgFds(sock: number, data: Uint8Array, fds: readonly number[]): number {
  if (fds.length > MAX_FDS) throw new RangeError(`at most ${MAX_FDS} fds`);
  const len = 16 + 4 * fds.length;
  const controlLen = fds.length ? (len + 7) & ~7 : 0;
  prepare(data, controlLen);
  if (fds.length) {
    scratch.fill(0, 128, 128 + controlLen);
    scratch.writeBigUInt64LE(BigInt(len), 128);
    scratch.writeInt32LE(SOL_SOCKET, 136);
    scratch.writeInt32LE(SCM_RIGHTS, 140);
    fds.forEach((fd, i) => scratch.writeInt32LE(fd, 144 + 4 * i));
  }
  const n = check(c.sendmsg(sock, scratch, MSG_NOSIGNAL), 'sendmsg');
  // `data` is used after the call so it cannot be collected during it.
  if (n > data.length) throw new Error('sendmsg sent more than it was given');
  return n;
}

/** One recvmsg into `buf`; received fds are close-on-exec. Throws SysError (EAGAIN included). */
export function recvmsgFds(sock: number, buf: Uint8Array, flags = 0): { n: number; fds: number[] } {
  const controlLen = 16 + 4 * MAX_FDS;
  prepare(buf, controlLen);
  const n = check(c.recvmsg(sock, scratch, flags | MSG_CMSG_CLOEXEC), 'recvmsg');
  if (n > buf.length) throw new Error('recvmsg returned more than the buffer holds');
  const got = Number(scratch.readBigUInt64LE(40));
  const fds: number[] = [];
  for (let p = 128; p + 16 <= 128 + got;) {
    const clen = Number(scratch.readBigUInt64LE(p));
    if (clen < 16) break;
    if (scratch.readInt32LE(p + 8) === SOL_SOCKET && scratch.readInt32LE(p + 12) === SCM_RIGHTS) {
      for (let q = p + 16; q + 4 <= p + clen; q += 4) fds.push(scratch.readInt32LE(q));
    }
    p += (clen + 7) & ~7;
  }
  return { n, fds };
}

export const sleep = (ms: number): Promise<void> => new Promise((r) => setTimeout(r, ms));
