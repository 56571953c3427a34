// The only place the project calls libc. Node has no API for tun ioctls,
// SCM_RIGHTS, mmap, eventfd or flock; koffi calls them with ~30 ns overhead and
// ships its binary inside the npm package (no download at install). Everything
// here takes and returns plain numbers/Buffers so callers never see pointers.
import koffi from 'koffi';
import { constants } from 'node:os';

const lib = koffi.load('libc.so.6');

// Fixed prototypes instead of variadic ones: koffi calls them faster and the
// kernel ABI for these requests is (int, unsigned long, pointer|integer).
export const c = {
  open: lib.func('int open(const char *path, int flags)'),
  close: lib.func('int close(int fd)'),
  read: lib.func('intptr_t read(int fd, void *buf, size_t n)'),
  write: lib.func('intptr_t write(int fd, const void *buf, size_t n)'),
  ioctlPtr: lib.func('int ioctl(int fd, unsigned long req, void *arg)'),
  ioctlInt: lib.func('int ioctl(int fd, unsigned long req, unsigned long arg)'),
  socket: lib.func('int socket(int domain, int type, int protocol)'),
  socketpair: lib.func('int socketpair(int domain, int type, int protocol, _Out_ int *sv)'),
  sendmsg: lib.func('intptr_t sendmsg(int fd, void *msg, int flags)'),
  recvmsg: lib.func('intptr_t recvmsg(int fd, void *msg, int flags)'),
  getsockopt: lib.func('int getsockopt(int fd, int level, int name, void *val, _Inout_ uint32_t *len)'),
  fcntl: lib.func('int fcntl(int fd, int cmd, int arg)'),
  flock: lib.func('int flock(int fd, int op)'),
  geteuid: lib.func('uint32_t geteuid()'),
  dup3: lib.func('int dup3(int oldfd, int newfd, int flags)'),
  // Raw syscalls glibc 2.36 has no wrapper for (pidfd_open, pidfd_getfd).
  syscall3: lib.func('long syscall(long nr, long a, long b, long c)'),
  poll: lib.func('int poll(void *fds, unsigned long nfds, int timeout)'),
};

export const O_RDWR = 0o2;
export const O_NONBLOCK = 0o4000;
export const O_CLOEXEC = 0o2000000;

const errnoNames = new Map<number, string>();
for (const [name, num] of Object.entries(constants.errno)) errnoNames.set(num, name);

/** A failed system call, with the errno name kept for error mapping. */
export class SysError extends Error {
  readonly errno: number;
  readonly code: string;
  readonly syscall: string;
  constructor(syscall: string, errno: number, detail?: string) {
    const code = errnoNames.get(errno) ?? `E${errno}`;
    super(`${syscall}${detail ? ` (${detail})` : ''}: ${code}`);
    this.errno = errno;
    this.code = code;
    this.syscall = syscall;
  }
}

/** Throws a SysError when a libc call returned a negative value. */
export function check(ret: number | bigint, syscall: string, detail?: string): number {
  const n = Number(ret);
  if (n < 0) throw new SysError(syscall, koffi.errno(), detail);
  return n;
}

const F_SETFD = 2;
const FD_CLOEXEC = 1;
const POLLIN = 1;
const EINTR = 4;

/** Blocks the thread until fd is readable (or hung up) or ms pass; false on timeout. For one-shot synchronous paths only. */
export function waitReadableSync(fd: number, ms: number): boolean {
  const pfd = Buffer.alloc(8);
  pfd.writeInt32LE(fd, 0);
  pfd.writeInt16LE(POLLIN, 4);
  const deadline = Date.now() + ms;
  for (;;) {
    const left = Math.max(0, deadline - Date.now());
    const n = Number(c.poll(pfd, 1, left));
    if (n > 0) return true;
    if (n === 0) return false;
    if (koffi.errno() !== EINTR) throw new SysError('poll', koffi.errno());
  }
}

/** Marks an inherited fd close-on-exec, so that the processes we start do not get it. */
export function setCloseOnExec(fd: number): void {
  check(c.fcntl(fd, F_SETFD, FD_CLOEXEC), 'fcntl', 'F_SETFD');
}

export function closeFd(fd: number): void {
  if (fd >= 0) c.close(fd);
}

/** Opens a device node read-write and close-on-exec; SysError (with errno) on failure. */
export function openReadWrite(path: string): number {
  return check(c.open(path, O_RDWR | O_CLOEXEC), 'open', path);
}

// read/write for per-frame paths: no SysError, no allocation; a negative
// result (EAGAIN on a non-blocking fd, or a real error) is left to the caller.
/** read(2) into buf[0, len): bytes read, 0 at end of file, negative on error. */
export function readFd(fd: number, buf: Uint8Array, len: number): number {
  return Number(c.read(fd, buf, len));
}

/** write(2) of buf[0, len): bytes written, negative on error. */
export function writeFd(fd: number, buf: Uint8Array, len: number): number {
  return Number(c.write(fd, buf, len));
}

/** Address of a Buffer's bytes, for building kernel structs that hold pointers. */
export function addressOf(buf: Buffer | Uint8Array): bigint {
  return koffi.address(buf) as bigint;
}

export { koffi };
