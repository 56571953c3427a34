// File descriptors over AF_UNIX sockets (SCM_RIGHTS): the helper protocol
// QEMU and libvirt speak, and vhost-user's fd-carrying messages.
import { addressOf, c, check, koffi, O_CLOEXEC, SysError } from './libc.js';

const SOL_SOCKET = 1;
const SCM_RIGHTS = 1;
const SO_TYPE = 3;
const SO_PEERCRED = 17;
const MSG_CMSG_CLOEXEC = 0x40000000;
const MSG_NOSIGNAL = 0x4000;
export const AF_UNIX = 1;
export const SOCK_STREAM = 1;
export const SOCK_CLOEXEC = O_CLOEXEC;

// sizeof(struct cmsghdr) on 64-bit Linux; CMSG_LEN(n) = 16 + n, CMSG_SPACE rounds to 8.
const CMSG_HDR = 16;
const MAX_FDS = 32;

// The kernel reads msghdr -> iovec -> data by address, so every buffer whose
// address is written into another must stay alive until the syscall returns.
// These are module-level (allocated once, never collected, never moved); the
// caller's data buffer is pinned in `pin` for the duration of the call.
const IOV = Buffer.alloc(16);
const MSG = Buffer.alloc(56);
const SEND_CONTROL = Buffer.alloc(CMSG_HDR + 4 * MAX_FDS);
const RECV_CONTROL = Buffer.alloc(CMSG_HDR + 4 * MAX_FDS);
const IOV_ADDR = addressOf(IOV);
const pin: { buf: Uint8Array | null } = { buf: null };

function msghdr(iov: Uint8Array, iovLen: number, control: Buffer | null, controlLen: number): Buffer {
  pin.buf = iov;
  IOV.writeBigUInt64LE(addressOf(iov), 0);
  IOV.writeBigUInt64LE(BigInt(iovLen), 8);
  MSG.fill(0);
  MSG.writeBigUInt64LE(IOV_ADDR, 16);
  MSG.writeBigUInt64LE(1n, 24);
  if (control) {
    MSG.writeBigUInt64LE(addressOf(control), 32);
    MSG.writeBigUInt64LE(BigInt(controlLen), 40);
  }
  return MSG;
}

/** Sends data with fds attached in one sendmsg. Returns bytes sent. */
export function sendWithFds(sock: number, data: Uint8Array, fds: readonly number[], flags = 0): number {
  if (fds.length > MAX_FDS) throw new RangeError(`at most ${MAX_FDS} fds per message`);
  let control: Buffer | null = null;
  let controlLen = 0;
  if (fds.length > 0) {
    const len = CMSG_HDR + 4 * fds.length;
    controlLen = (len + 7) & ~7;
    control = SEND_CONTROL;
    control.fill(0, 0, controlLen);
    control.writeBigUInt64LE(BigInt(len), 0);
    control.writeInt32LE(SOL_SOCKET, 8);
    control.writeInt32LE(SCM_RIGHTS, 12);
    fds.forEach((fd, i) => control!.writeInt32LE(fd, CMSG_HDR + 4 * i));
  }
  const m = msghdr(data, data.length, control, controlLen);
  try {
    return check(c.sendmsg(sock, m, MSG_NOSIGNAL | flags), 'sendmsg');
  } finally {
    pin.buf = null;
  }
}

const MSG_DONTWAIT = 0x40;
const POLLOUT = 4;
const EAGAIN = 11;
const EINTR = 4;

/** Thrown by sendAllWithFds when the peer's socket stays full until the deadline. */
export class SendTimeoutError extends Error {}

/**
 * Sends all of data (fds with its first byte) without ever blocking in
 * sendmsg: the socket's blocking mode belongs to whoever made it (a hostile
 * caller can fill it), so each sendmsg is MSG_DONTWAIT and the wait for room
 * is a poll bounded by timeoutMs overall. Throws SendTimeoutError when the
 * peer does not make room in time.
 */
export function sendAllWithFds(sock: number, data: Uint8Array, fds: readonly number[], timeoutMs: number): void {
  const deadline = Date.now() + timeoutMs;
  const pfd = Buffer.alloc(8);
  let off = 0;
  let pending = fds;
  while (off < data.length) {
    try {
      off += sendWithFds(sock, data.subarray(off), pending, MSG_DONTWAIT);
      pending = [];
      continue;
    } catch (e) {
      if (!(e instanceof SysError) || e.errno !== EAGAIN) throw e;
    }
    const left = deadline - Date.now();
    if (left <= 0) throw new SendTimeoutError(`the socket stayed full for ${timeoutMs / 1000} s`);
    pfd.writeInt32LE(sock, 0);
    pfd.writeInt16LE(POLLOUT, 4);
    pfd.writeInt16LE(0, 6);
    const n = Number(c.poll(pfd, 1, left));
    if (n < 0 && koffi.errno() !== EINTR) throw new SysError('poll', koffi.errno());
  }
}

export interface Received {
  /** Bytes read; 0 means the peer closed. */
  n: number;
  fds: number[];
  /** The kernel dropped fds because the control buffer was too small (MSG_CTRUNC). */
  truncated: boolean;
}

/**
 * One recvmsg into buf[off, off+len). Received fds are close-on-exec. Throws
 * SysError (EAGAIN included) so callers decide how to wait.
 */
export function recvWithFds(sock: number, buf: Uint8Array, off = 0, len = buf.length - off, flags = 0): Received {
  const view = buf.subarray(off, off + len);
  const controlLen = CMSG_HDR + 4 * MAX_FDS;
  const control = RECV_CONTROL;
  control.fill(0);
  const m = msghdr(view, len, control, controlLen);
  let n: number;
  try {
    n = check(c.recvmsg(sock, m, flags | MSG_CMSG_CLOEXEC), 'recvmsg');
  } finally {
    pin.buf = null;
  }
  const got = Number(m.readBigUInt64LE(40));
  const msgFlags = m.readInt32LE(48);
  const fds: number[] = [];
  let p = 0;
  while (p + CMSG_HDR <= got) {
    const clen = Number(control.readBigUInt64LE(p));
    if (clen < CMSG_HDR) break;
    if (control.readInt32LE(p + 8) === SOL_SOCKET && control.readInt32LE(p + 12) === SCM_RIGHTS) {
      for (let q = p + CMSG_HDR; q + 4 <= p + clen; q += 4) fds.push(control.readInt32LE(q));
    }
    p += (clen + 7) & ~7;
  }
  return { n, fds, truncated: (msgFlags & 0x8) !== 0 };
}

export function socketPair(): [number, number] {
  const sv = [0, 0];
  check(c.socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, sv), 'socketpair');
  return [sv[0]!, sv[1]!];
}

/**
 * SO_TYPE of an fd: tells a stream socket from anything else. A getsockopt on
 * a non-socket fails with ENOTSOCK without calling into the file's driver,
 * unlike fstat (which a FUSE file can make hang): the kind check for fds a
 * caller chose.
 */
export function socketType(fd: number): number {
  const val = Buffer.alloc(4);
  const len = [4];
  check(c.getsockopt(fd, SOL_SOCKET, SO_TYPE, val, len), 'getsockopt', 'SO_TYPE');
  return val.readInt32LE(0);
}

export interface PeerCred { pid: number; uid: number; gid: number }

export function peerCred(fd: number): PeerCred {
  const val = Buffer.alloc(12);
  const len = [12];
  check(c.getsockopt(fd, SOL_SOCKET, SO_PEERCRED, val, len), 'getsockopt', 'SO_PEERCRED');
  return { pid: val.readInt32LE(0), uid: val.readUInt32LE(4), gid: val.readUInt32LE(8) };
}
