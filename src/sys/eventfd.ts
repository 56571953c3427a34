// The vring kick/call eventfds the front-end hands us: signal, drain, recognise.
import { readFileSync } from 'node:fs';
import { c, koffi } from './libc.js';

const lib = koffi.load('libc.so.6');
const pollRaw = lib.func('int poll(void *fds, unsigned long n, int timeout)');
const POLLIN = 0x1;
const POLLOUT = 0x4;
const pfd = Buffer.alloc(8); // struct pollfd { int fd; short events; short revents; }

// The front-end shares these fds' open file descriptions and may clear
// O_NONBLOCK after handing them over (or drain them itself), so a plain
// read/write could block the worker every port shares. A zero-timeout poll
// first makes both calls unable to block: a notification that cannot be
// delivered now is dropped, as a full counter would drop it anyway.
function ready(fd: number, events: number): boolean {
  pfd.writeInt32LE(fd, 0);
  pfd.writeInt16LE(events, 4);
  pfd.writeInt16LE(0, 6);
  return Number(pollRaw(pfd, 1, 0)) === 1 && (pfd.readInt16LE(6) & events) !== 0;
}

const one = Buffer.alloc(8);
one.writeBigUInt64LE(1n);
const sink = Buffer.alloc(8);

/** Whether fd is an eventfd (the kernel lists its counter in fdinfo). */
export function isEventFd(fd: number): boolean {
  try {
    return /^eventfd-count:/m.test(readFileSync(`/proc/self/fdinfo/${fd}`, 'latin1'));
  } catch {
    return false;
  }
}

/** Signals the eventfd (a vring call/kick) unless that would block. */
export function eventfdSignal(fd: number): void {
  if (ready(fd, POLLOUT)) c.write(fd, one, 8);
}

/** Consumes pending signals; returns how many there were (0 if none; works on blocking fds only when signalled). */
export function eventfdDrain(fd: number): number {
  if (!ready(fd, POLLIN)) return 0;
  const n = Number(c.read(fd, sink, 8));
  return n === 8 ? Number(sink.readBigUInt64LE(0)) : 0;
}
