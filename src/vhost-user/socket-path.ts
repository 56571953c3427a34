// Listening sockets on paths we may share with others: we remove only what
// is provably ours. Before binding, an existing path is removed only if it is
// a socket of the port's owner that nobody listens on (a stale one of a
// crashed server); a regular file, a directory, a live socket or someone
// else's socket is an error. A port owned by another user is bound with that
// user's filesystem identity when the user may write the directory (the
// kernel then checks every step as that user), else by us and handed over in
// a directory that user cannot touch. On exit, the path is removed only if it
// still is the very socket we bound (same device and inode).
import { chmodSync, chownSync, existsSync, lchownSync, lstatSync, realpathSync, statSync, unlinkSync } from 'node:fs';
import { dirname, isAbsolute, normalize } from 'node:path';
import { lookupGroup } from '../sys/nss.js';
import { closeFd, SysError } from '../sys/libc.js';
import { asFsUser } from '../sys/fsuid.js';
import { connectUnixNonBlocking, listenUnix } from '../sys/unix-socket.js';
import { AccessDeniedError, NotFoundError, PermissionError, SetupError, UsageError } from '../errors.js';
import { mayWriteDir, type Owner } from './tenancy.js';

export interface OwnedSocket {
  fd: number; path: string; dev: number; ino: number;
  /** Bound with this user's filesystem identity: removed with it too. */
  asUser?: Owner;
}

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
export function resolveGroup(text: string, flag = '--socket-group'): number {
  if (/^\d+$/.test(text)) return Number(text);
  const gr = lookupGroup(text);
  if (gr) return gr.gid;
  throw new UsageError(`${flag} '${text}': no such group`, "run 'qemu-net-helper vhost-user serve --help'");
}

function clearStale(path: string, ownerUid: number): void {
  let st;
  try { st = lstatSync(path); } catch { return; }
  if (!st.isSocket()) throw new SetupError(`${path} exists and is not a socket; not removing it`, 'pass another --socket path');
  if (st.uid !== ownerUid) throw new SetupError(`${path} is a socket of uid ${st.uid}, not of the port's owner (uid ${ownerUid}); not replacing it`, 'remove it yourself if it is stale, or pass another path');
  let fd = -1;
  try {
    fd = connectUnixNonBlocking(path);
  } catch (e) {
    if (e instanceof SysError && e.code === 'ECONNREFUSED') {
      unlinkSync(path); // nobody listens: a stale socket
      return;
    }
    if (e instanceof SysError && e.code === 'EAGAIN') throw new SetupError(`${path} is a socket another process listens on (its backlog is full); not removing it`, 'stop that process or pass another path');
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

/** listenUnix with its refusal as bindError's; `flag`: what the user passed the path as. */
function bindListen(path: string, flag: string): number {
  try {
    return listenUnix(path);
  } catch (e) {
    throw bindError(path, e, flag);
  }
}

/** The root's own sockets (the control socket, ports of ours): mode and group as asked. */
export function listenOwned(path: string, access: SocketAccess = {}, flag = '--socket'): OwnedSocket {
  clearStale(path, process.geteuid?.() ?? 0);
  return finish(path, bindListen(path, flag), () => {
    if (access.gid !== undefined) chownSync(path, -1, access.gid);
    if (access.mode !== undefined) chmodSync(path, access.mode);
  });
}

function finish(path: string, fd: number, setAccess: () => void, asUser?: Owner): OwnedSocket {
  try {
    setAccess();
    const st = lstatSync(path);
    return { fd, path, dev: st.dev, ino: st.ino, ...(asUser ? { asUser } : {}) };
  } catch (e) {
    closeFd(fd);
    try { unlinkSync(path); } catch { /* gone */ }
    throw new SetupError(`${path}: setting the socket's owner or mode failed: ${(e as Error).message}`);
  }
}

/** No symbolic link anywhere on the path (resolved parent equals the parent as written), the last part not a link either. */
function checkPlainPath(path: string): void {
  if (!isAbsolute(path) || normalize(path) !== path) throw new AccessDeniedError(`access denied: ${path} is not an absolute, normalized path`, 'give the socket\'s full path without . or .. parts');
  const dir = dirname(path);
  let real: string;
  try { real = realpathSync(dir); } catch (e) { throw new SetupError(`${dir}: ${(e as NodeJS.ErrnoException).code ?? (e as Error).message}`, 'the socket\'s directory must exist'); }
  if (real !== dir) throw new AccessDeniedError(`access denied: ${dir} goes through a symbolic link (to ${real})`, 'give the real path');
  const st = lstatSync(path, { throwIfNoEntry: false });
  if (st?.isSymbolicLink()) throw new AccessDeniedError(`access denied: ${path} is a symbolic link`, 'give the real path');
}

export interface PortSocketSpec {
  owner: Owner;
  mode: number;
  /** Asked for by the owner itself (a delegated control client): the directory must be one it may write. */
  byTenant: boolean;
}

/**
 * A port's socket, owned by the port's owner. A tenant's path must be plain
 * and in a directory it may write; the bind then happens as the tenant, so
 * nothing appears where the tenant could not have made it itself.
 */
export function listenForOwner(path: string, spec: PortSocketSpec): OwnedSocket {
  const me = process.geteuid?.() ?? 0;
  const { owner, mode } = spec;
  if (owner.uid === me && !spec.byTenant) {
    clearStale(path, owner.uid);
    return finish(path, bindListen(path, '--socket'), () => {
      if (owner.gid !== (process.getegid?.() ?? 0)) chownSync(path, -1, owner.gid);
      chmodSync(path, mode);
    });
  }
  if (me !== 0) throw new AccessDeniedError(`access denied: a switch running as uid ${me} cannot make sockets owned by uid ${owner.uid}`, 'run the switch as root, or let the port belong to the switch\'s user');
  const asOwner = (): OwnedSocket => asFsUser(owner.uid, owner.gid, () => {
    // Every look at a tenant's path is the tenant's own: no answer tells it about what it could not see.
    if (spec.byTenant) {
      checkPlainPath(path);
      if (!mayWriteDir(owner, statSync(dirname(path)))) throw new AccessDeniedError(`access denied: uid ${owner.uid} may not write ${dirname(path)}`, 'put the socket in a directory of yours');
    }
    clearStale(path, owner.uid);
    return finish(path, bindListen(path, '--socket'), () => chmodSync(path, mode), owner);
  });
  if (spec.byTenant || mayWriteDir(owner, statSync(dirname(path)))) return asOwner();
  // Root chose a directory the owner cannot change: bind as root, then hand over.
  clearStale(path, owner.uid);
  return finish(path, bindListen(path, '--socket'), () => {
    lchownSync(path, owner.uid, owner.gid);
    chmodSync(path, mode);
  });
}

/** Closes the socket and removes its path if it still is ours. */
export function closeOwned(s: OwnedSocket): void {
  closeFd(s.fd);
  removeIfOurs(s);
}

/** Removes the path if it still is the socket we bound (the fd is closed elsewhere). */
export function removeIfOurs(s: OwnedSocket): void {
  if (s.asUser) {
    const u = s.asUser;
    const { asUser: _, ...plain } = s;
    try { asFsUser(u.uid, u.gid, () => removeIfOurs(plain)); } catch { /* cannot act as the owner: leave it */ }
    return;
  }
  try {
    const st = lstatSync(s.path);
    if (st.isSocket() && st.dev === s.dev && st.ino === s.ino) unlinkSync(s.path);
  } catch { /* already gone */ }
}
