// User and group lookups through NSS (getent), so accounts from LDAP, sssd,
// extrausers or systemd are found by name like those in /etc/passwd. Node has
// no getpwnam and the helper must not load native code for it, hence getent:
// run by absolute path with an empty environment (a helper with file
// capabilities must not hand the caller's LD_PRELOAD or PATH to a child) and a
// timeout (a stalled directory server must not hang a request forever).
// Synchronous on purpose: its callers are the CLI, the helper and the broker's
// request children (src/broker/runner-child.ts), never the broker's event loop.
import { execFileSync } from 'node:child_process';
import { existsSync } from 'node:fs';
import { SetupError } from '../errors.js';

export interface UserEntry { name: string; uid: number; gid: number }
export interface GroupEntry { name: string; gid: number; members: string[] }

/** Generous: a directory server on a loaded machine may take seconds; 3x that still ends. */
const TIMEOUT_MS = 15_000;
const GETENT = ['/usr/bin/getent', '/bin/getent'];
/** Names NSS back-ends accept (sssd's user@domain and Samba's machine$ included); never an option, never a field separator. */
const NAME = /^[A-Za-z0-9_.][A-Za-z0-9_.@$-]{0,255}$/;
const MAX_ID = 0xfffffffe;

function getentPath(): string {
  const p = GETENT.find((f) => existsSync(f));
  if (!p) throw new SetupError('cannot look up users and groups: getent is not installed (/usr/bin/getent)', 'install libc-bin');
  return p;
}

/** The entry's fields, or null when NSS has no such key (getent's exit status 2). */
function getent(db: 'passwd' | 'group', key: string): string[] | null {
  if (!/^\d+$/.test(key) && !NAME.test(key)) return null;
  let out: string;
  try {
    out = execFileSync(getentPath(), [db, '--', key], {
      encoding: 'utf8', env: {}, stdio: ['ignore', 'pipe', 'ignore'], timeout: TIMEOUT_MS, killSignal: 'SIGKILL', maxBuffer: 16 << 20,
    });
  } catch (e) {
    const err = e as { status?: number | null; signal?: string | null; code?: string };
    if (err.status === 2) return null;
    const why = err.signal ? `getent was killed (${err.signal}) after ${TIMEOUT_MS / 1000} s` : err.code ?? `getent exited ${err.status}`;
    throw new SetupError(`cannot look up ${db === 'passwd' ? 'user' : 'group'} '${key}' through NSS: ${why}`, 'check /etc/nsswitch.conf and the directory service (sssd, LDAP)');
  }
  const f = out.split('\n')[0]!.split(':');
  return f.length >= 4 ? f : null;
}

function id(text: string | undefined): number | null {
  return text !== undefined && /^\d+$/.test(text) && Number(text) <= MAX_ID ? Number(text) : null;
}

/** A user by name or uid; null when NSS has none. Throws SetupError when NSS cannot answer. */
export function lookupUser(nameOrUid: string): UserEntry | null {
  const f = getent('passwd', nameOrUid);
  const uid = id(f?.[2]);
  const gid = id(f?.[3]);
  return f && uid !== null && gid !== null ? { name: f[0]!, uid, gid } : null;
}

/** A group by name or gid; null when NSS has none. Throws SetupError when NSS cannot answer. */
export function lookupGroup(nameOrGid: string): GroupEntry | null {
  const f = getent('group', nameOrGid);
  const gid = id(f?.[2]);
  return f && gid !== null ? { name: f[0]!, gid, members: (f[3] ?? '').split(',').filter(Boolean) } : null;
}
