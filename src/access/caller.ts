// Who is asking: uid, primary gid and supplementary groups, as the kernel
// reported them (SO_PEERCRED and SO_PEERGROUPS for a broker client, the real
// ids for a helper run directly). ACL rules name users and groups by name or
// number; names are looked up in /etc/passwd and /etc/group, read directly
// because Node has no getpwnam and the helper must not load native code for
// it (hosts whose accounts live in LDAP can use numeric ids).
import { readFileSync } from 'node:fs';

function readIds(file: string): Map<string, { id: number; members: string[] }> {
  const m = new Map<string, { id: number; members: string[] }>();
  let text = '';
  try {
    text = readFileSync(file, 'utf8');
  } catch { return m; }
  for (const line of text.split('\n')) {
    const f = line.split(':');
    if (f.length < 4 || !/^\d+$/.test(f[2]!)) continue;
    m.set(f[0]!, { id: Number(f[2]), members: (f[3] ?? '').split(',').filter(Boolean) });
  }
  return m;
}

let passwd: Map<string, { id: number }> | undefined;
let group: Map<string, { id: number }> | undefined;

function idOf(table: 'passwd' | 'group', nameOrId: string): number | null {
  if (/^\d+$/.test(nameOrId)) return Number(nameOrId);
  const t = table === 'passwd' ? (passwd ??= readIds('/etc/passwd')) : (group ??= readIds('/etc/group'));
  return t.get(nameOrId)?.id ?? null;
}

function nameOf(table: 'passwd' | 'group', id: number): string | null {
  const t = table === 'passwd' ? (passwd ??= readIds('/etc/passwd')) : (group ??= readIds('/etc/group'));
  for (const [name, v] of t) if (v.id === id) return name;
  return null;
}

export class Caller {
  readonly uid: number;
  readonly gid: number;
  readonly groups: readonly number[];
  readonly pid: number;
  constructor(uid: number, gid: number, groups: readonly number[], pid: number) {
    this.uid = uid;
    this.gid = gid;
    this.groups = groups;
    this.pid = pid;
  }
  get isRoot(): boolean { return this.uid === 0; }
  isUser(nameOrUid: string): boolean { return idOf('passwd', nameOrUid) === this.uid; }
  inGroup(nameOrGid: string): boolean {
    const gid = idOf('group', nameOrGid);
    return gid !== null && (gid === this.gid || this.groups.includes(gid));
  }
  describe(): string {
    const n = nameOf('passwd', this.uid);
    return `uid ${this.uid}${n ? ` (${n})` : ''}`;
  }
}

/** The process's own caller: its real ids (a helper with file capabilities acts for the user who ran it). */
export function processCaller(): Caller {
  const uid = process.getuid?.() ?? 0;
  const gid = process.getgid?.() ?? 0;
  return new Caller(uid, gid, process.getgroups?.() ?? [], process.pid);
}
