import { readFileSync } from 'node:fs';
import { c, check, koffi } from './libc.js';

const lib = koffi.load('libc.so.6');
const eventfdRaw = lib.func('int eventfd(unsigned int initval, int flags)');
const EFD_NONBLOCK = 0o4000;
const EFD_CLOEXEC = 0o2000000;

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

export function eventfd(): number {
  return check(eventfdRaw(0, EFD_NONBLOCK | EFD_CLOEXEC), 'eventfd');
}

/** Signals the eventfd (a vring call/kick). Errors are ignored: a full counter still wakes the reader. */
export function eventfdSignal(fd: number): void {
  c.write(fd, one, 8);
}

/** Consumes pending signals; returns how many there were (0 if none; works on blocking fds only when signalled). */
export function eventfdDrain(fd: number): number {
  const n = Number(c.read(fd, sink, 8));
  return n === 8 ? Number(sink.readBigUInt64LE(0)) : 0;
}
