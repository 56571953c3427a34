// Listening sockets on paths we may share with others: we remove only what
// is provably ours. Before binding, an existing path is removed only if it is
// a socket nobody listens on (a stale one of a crashed server); a regular
// file, a directory or a live socket is an error. On exit, the path is
// removed only if it still is the very socket we bound (same device and
// inode), not one someone else put there since.
import { chmodSync, chownSync, existsSync, lstatSync, unlinkSync } from 'node:fs';
import { execFileSync } from 'node:child_process';
import { closeFd, SysError } from '../sys/libc.js';
import { connectUnix, listenUnix } from '../sys/unix-socket.js';
import { dirname } from 'node:path';
import { NotFoundError, PermissionError, SetupError, UsageError } from '../errors.js';

export interface OwnedSocket { fd: number; path: string; dev: number; ino: number }

export interface SocketAccess {
  /** Permission bits for the socket file, e.g. 0o660. */
  mode?: number;
  /** Group owner (gid). */
  gid?: number;
}

/** "0660" / "660" -> 0o660. */
export function parseSocketMode(text: string): number {
  if (!/^0?[0-7]{3}$/.test(text)) throw new UsageError(`--socket-mode '${text}' is not an octal mode like 0660`, "run 'qemu-net-helper vhost-user serve --help'");
  return parseInt(text, 8);
}

/** A group name or number -> gid (through NSS, so LDAP groups work too). */
export function resolveGroup(text: string): number {
  if (/^\d+$/.test(text)) return Number(text);
  try {
    const line = execFileSync('getent', ['group', text], { encoding: 'utf8', stdio: ['ignore', 'pipe', 'ignore'] });
    const gid = Number(line.split(':')[2]);
    if (Number.isInteger(gid)) return gid;
  } catch { /* not found */ }
  throw new UsageError(`--socket-group '${text}': no such group`, "run 'qemu-net-helper vhost-user serve --help'");
}

function clearStale(path: string): void {
  let st;
  try { st = lstatSync(path); } catch { return; }
  if (!st.isSocket()) throw new SetupError(`${path} exists and is not a socket; not removing it`, 'pass another --socket path');
  let fd = -1;
  try {
    fd = connectUnix(path);
  } catch (e) {
    if (e instanceof SysError && e.code === 'ECONNREFUSED') {
      unlinkSync(path); // nobody listens: a stale socket
      return;
    }
    throw new SetupError(`${path}: cannot tell whether the socket is in use (${(e as Error).message}); not removing it`, 'remove it yourself if it is stale');
  }
  closeFd(fd);
  throw new SetupError(`${path} is a socket another process listens on; not removing it`, 'stop that process or pass another --socket path');
}

/** bind()'s refusal as the error people can act on: the path and the reason, with its documented exit code. */
function bindError(path: string, e: unknown, flag: string): Error {
  if (e instanceof RangeError) return new UsageError(`socket path ${path} is too long (${Buffer.byteLength(path)} bytes; unix sockets allow 107)`, `pass a shorter ${flag}`);
  if (!(e instanceof SysError)) return e as Error;
  const dir = dirname(path);
  switch (e.code) {
    case 'ENOENT': return existsSync(dir)
      ? new NotFoundError(`cannot create socket ${path}: ${dir} does not take sockets (ENOENT)`, `pass another ${flag}`)
      : new NotFoundError(`cannot create socket ${path}: directory ${dir} does not exist`, `create it or pass another ${flag}`);
    case 'ENOTDIR': return new NotFoundError(`cannot create socket ${path}: a component of ${dir} is not a directory`, `pass another ${flag}`);
    case 'EACCES': case 'EPERM': return new PermissionError(`cannot create socket ${path}: no permission to write in ${dir}`, `pass a ${flag} in a directory you may write, or run as its owner`);
    case 'EROFS': return new SetupError(`cannot create socket ${path}: ${dir} is on a read-only file system`, `pass another ${flag}`);
    case 'EADDRINUSE': return new SetupError(`cannot create socket ${path}: the path appeared meanwhile (another process?)`, `pass another ${flag}`);
    default: return new SetupError(`cannot create socket ${path}: ${e.code}`, `pass another ${flag}`);
  }
}

/** `flag`: what the user passed the path as, for the hint of an error. */
export function listenOwned(path: string, access: SocketAccess = {}, flag = '--socket'): OwnedSocket {
  clearStale(path);
  let fd: number;
  try {
    fd = listenUnix(path);
  } catch (e) {
    throw bindError(path, e, flag);
  }
  try {
    if (access.gid !== undefined) chownSync(path, -1, access.gid);
    if (access.mode !== undefined) chmodSync(path, access.mode);
    const st = lstatSync(path);
    return { fd, path, dev: st.dev, ino: st.ino };
  } catch (e) {
    closeFd(fd);
    try { unlinkSync(path); } catch { /* gone */ }
    throw new SetupError(`${path}: setting the socket's owner or mode failed: ${(e as Error).message}`);
  }
}

/** Closes the socket and removes its path if it still is ours. */
export function closeOwned(s: OwnedSocket): void {
  closeFd(s.fd);
  removeIfOurs(s);
}

/** Removes the path if it still is the socket we bound (the fd is closed elsewhere). */
export function removeIfOurs(s: OwnedSocket): void {
  try {
    const st = lstatSync(s.path);
    if (st.isSocket() && st.dev === s.dev && st.ino === s.ino) unlinkSync(s.path);
  } catch { /* already gone */ }
}
