// Filesystem work done as another user by a root process: setfsuid/setfsgid
// change only the calling thread's filesystem identity (not the process's, and
// not libuv's pool threads), and the kernel then checks every path lookup,
// create and unlink as that user, so a path chosen by a tenant can only reach
// what the tenant could reach itself, with no check-then-use race.
import { koffi } from './libc.js';

const lib = koffi.load('libc.so.6');
const setfsuid = lib.func('int setfsuid(uint32_t uid)');
const setfsgid = lib.func('int setfsgid(uint32_t gid)');
// Passing an id the call cannot set returns the current one without changing it.
const QUERY = 0xffffffff;

/** Runs `fn` (synchronous filesystem calls only) with the filesystem identity uid:gid. */
export function asFsUser<T>(uid: number, gid: number, fn: () => T): T {
  const euid = process.geteuid?.() ?? 0;
  const egid = process.getegid?.() ?? 0;
  if (uid === euid && gid === egid) return fn();
  setfsgid(gid);
  setfsuid(uid);
  try {
    // Without CAP_SETUID the calls silently change nothing: never act as ourselves by mistake.
    if (Number(setfsuid(QUERY)) !== uid || Number(setfsgid(QUERY)) !== gid) throw new Error(`cannot act as uid ${uid} gid ${gid} on the filesystem (not root)`);
    return fn();
  } finally {
    setfsuid(euid);
    setfsgid(egid);
  }
}
