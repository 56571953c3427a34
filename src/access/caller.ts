// Who is asking: uid, primary gid and supplementary groups, as the kernel
// reported them (SO_PEERCRED and SO_PEERGROUPS for a broker client, the real
// ids for a helper run directly). ACL rules name users and groups by name or
// number; names are resolved through NSS (src/sys/nss.ts), so LDAP and sssd
// accounts work by name. Lookups are cached per Caller, i.e. per request: an
// account added or removed counts from the next request on.
import { AccessDeniedError, HelperError } from '../errors.js';
import { lookupGroup, lookupUser } from '../sys/nss.js';

/** A lookup NSS cannot answer decides nothing: the request is refused (exit 3) rather than a deny rule skipped. */
function decidable<T>(f: () => T): T {
  try {
    return f();
  } catch (e) {
    if (e instanceof HelperError) throw new AccessDeniedError(`access denied: ${e.message}`, e.hint);
    throw e;
  }
}

export class Caller {
  readonly uid: number;
  readonly gid: number;
  readonly groups: readonly number[];
  readonly pid: number;
  private readonly ids = new Map<string, number | null>();
  constructor(uid: number, gid: number, groups: readonly number[], pid: number) {
    this.uid = uid;
    this.gid = gid;
    this.groups = groups;
    this.pid = pid;
  }
  private idOf(db: 'user' | 'group', nameOrId: string): number | null {
    if (/^\d+$/.test(nameOrId)) return Number(nameOrId);
    const key = `${db}:${nameOrId}`;
    if (!this.ids.has(key)) {
      this.ids.set(key, decidable(() => (db === 'user' ? lookupUser(nameOrId)?.uid : lookupGroup(nameOrId)?.gid) ?? null));
    }
    return this.ids.get(key)!;
  }
  get isRoot(): boolean { return this.uid === 0; }
  isUser(nameOrUid: string): boolean { return this.idOf('user', nameOrUid) === this.uid; }
  inGroup(nameOrGid: string): boolean {
    const gid = this.idOf('group', nameOrGid);
    return gid !== null && (gid === this.gid || this.groups.includes(gid));
  }
  describe(): string {
    let n: string | undefined;
    try { n = lookupUser(String(this.uid))?.name; } catch { /* the uid alone says enough */ }
    return `uid ${this.uid}${n ? ` (${n})` : ''}`;
  }
}

/** The process's own caller: its real ids (a helper with file capabilities acts for the user who ran it). */
export function processCaller(): Caller {
  const uid = process.getuid?.() ?? 0;
  const gid = process.getgid?.() ?? 0;
  return new Caller(uid, gid, process.getgroups?.() ?? [], process.pid);
}
