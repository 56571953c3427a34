// Unix stream sockets as raw fds. Node's net module cannot receive
// SCM_RIGHTS, and vhost-user needs to know which message carried which fd,
// so the vhost-user server and client keep the fd and use recvmsg directly.
import { c, check, closeFd, koffi } from './libc.js';
import { AF_UNIX, SOCK_CLOEXEC, SOCK_STREAM } from './unix-fd.js';

const lib = koffi.load('libc.so.6');
const bindRaw = lib.func('int bind(int fd, const void *addr, uint32_t len)');
const listenRaw = lib.func('int listen(int fd, int backlog)');
const accept4Raw = lib.func('int accept4(int fd, void *addr, void *len, int flags)');
const connectRaw = lib.func('int connect(int fd, const void *addr, uint32_t len)');
const SOCK_NONBLOCK = 0o4000;
const F_GETFL = 3;
const F_SETFL = 4;
const O_NONBLOCK = 0o4000;

function sockaddrUn(path: string): Buffer {
  const bytes = Buffer.from(path);
  if (bytes.length >= 108) throw new RangeError(`unix socket path is ${bytes.length} bytes; the limit is 107: ${path}`);
  const a = Buffer.alloc(110);
  a.writeUInt16LE(AF_UNIX, 0);
  bytes.copy(a, 2);
  return a;
}

export function listenUnix(path: string, backlog = 16): number {
  const fd = check(c.socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC | SOCK_NONBLOCK, 0), 'socket');
  try {
    const a = sockaddrUn(path);
    check(bindRaw(fd, a, 2 + Buffer.byteLength(path) + 1), 'bind', path);
    check(listenRaw(fd, backlog), 'listen', path);
    return fd;
  } catch (e) {
    closeFd(fd);
    throw e;
  }
}

/** Accepts one pending connection (non-blocking); -1 when none is pending. */
export function acceptUnix(listenFd: number): number {
  const fd = Number(accept4Raw(listenFd, null, null, SOCK_CLOEXEC | SOCK_NONBLOCK));
  return fd < 0 ? -1 : fd;
}

/** Connects (blocking connect on a unix socket completes immediately or fails). */
export function connectUnix(path: string): number {
  const fd = check(c.socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0), 'socket');
  try {
    check(connectRaw(fd, sockaddrUn(path), 2 + Buffer.byteLength(path) + 1), 'connect', path);
    setNonBlocking(fd, true);
    return fd;
  } catch (e) {
    closeFd(fd);
    throw e;
  }
}

/**
 * Connects without ever blocking: a listener whose backlog is full (a hostile
 * one can keep it full) answers EAGAIN instead of holding the caller.
 */
export function connectUnixNonBlocking(path: string): number {
  const fd = check(c.socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC | SOCK_NONBLOCK, 0), 'socket');
  try {
    check(connectRaw(fd, sockaddrUn(path), 2 + Buffer.byteLength(path) + 1), 'connect', path);
    return fd;
  } catch (e) {
    closeFd(fd);
    throw e;
  }
}

export function setNonBlocking(fd: number, on: boolean): void {
  const fl = check(c.fcntl(fd, F_GETFL, 0), 'fcntl');
  check(c.fcntl(fd, F_SETFL, on ? fl | O_NONBLOCK : fl & ~O_NONBLOCK), 'fcntl');
}
