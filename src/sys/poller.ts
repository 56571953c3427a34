// Waiting on raw fds from the event loop. koffi.node.poll is libuv's uv_poll:
// it works on any fd (eventfds, our own sockets) in any thread, but it aborts
// the whole process on an invalid fd or on a second handle for one fd. This
// module is the only user of it and enforces both rules.
import { fstatSync, readFileSync } from 'node:fs';
import { koffi } from './libc.js';

type Events = { readable: boolean; writable: boolean; disconnect: boolean };
type Handle = { start(opts: object, cb: (...a: unknown[]) => void): void; stop(): void; close(): void; unref(): void; ref(): void };

const handles = new Map<number, Handle>();

/**
 * Whether uv_poll can watch fd without aborting the process: open, and not a
 * regular file, directory or block device (epoll refuses those), and a
 * character device only if it is a tun/tap (ours), never e.g. /dev/null.
 */
function pollable(fd: number): boolean {
  let st;
  try { st = fstatSync(fd); } catch { return false; }
  if (st.isFile() || st.isDirectory() || st.isBlockDevice()) return false;
  if (st.isCharacterDevice()) {
    try {
      return /^iff:/m.test(readFileSync(`/proc/self/fdinfo/${fd}`, 'latin1'));
    } catch {
      return false;
    }
  }
  return true;
}

/**
 * Calls `onReadable` whenever fd is readable (level-triggered, like epoll
 * without EPOLLET). Returns false, without watching, if fd is not open.
 */
export function watchReadable(fd: number, onReadable: (disconnect: boolean) => void): boolean {
  if (!Number.isInteger(fd) || fd < 0 || !pollable(fd)) return false;
  unwatch(fd);
  // The callback really receives (status, events) despite the typings.
  const cb = (...args: unknown[]): void => {
    const ev = (args.length > 1 ? args[1] : args[0]) as Events | undefined;
    onReadable(Boolean(ev?.disconnect));
  };
  const h = (koffi as unknown as { node: { poll(fd: number, o: object, cb: (...a: unknown[]) => void): Handle } }).node.poll(fd, { readable: true, disconnect: true }, cb);
  handles.set(fd, h);
  return true;
}

/** Stops watching fd. Must be called before the fd is closed. */
export function unwatch(fd: number): void {
  const h = handles.get(fd);
  if (!h) return;
  handles.delete(fd);
  h.stop();
  h.close();
}
