// Which network namespace an endpoint's objects live in, and how to get back
// there. A namespace is known by its nsfs inode (stable for its whole life);
// to enter it we need a path: its bind mount (/run/netns/NAME of `ip netns
// add`, or a runtime's), else /proc/PID/ns/net of any process still in it.
// /proc/PID/ns/net is recorded never (the pid may be reused); a bind-mount path
// is recorded as a hint and checked against the inode before use.
import { readFileSync, readdirSync, statSync } from 'node:fs';
import type { NetnsRef } from '../state/netns-ref.js';

export type NetnsWhere = { kind: 'here' } | { kind: 'there'; path: string } | { kind: 'gone' };

function inodeOf(path: string): number | null {
  try { return statSync(path).ino; } catch { return null; }
}

/** nsfs bind mounts of network namespace `inode`, from mountinfo; /run/netns and /var/run/netns first. */
function netnsMounts(inode: number, mountinfo = '/proc/self/mountinfo'): string[] {
  let text: string;
  try { text = readFileSync(mountinfo, 'utf8'); } catch { return []; }
  const out: string[] = [];
  for (const line of text.split('\n')) {
    // ID PARENT MAJ:MIN ROOT MOUNTPOINT OPTIONS [OPTIONAL...] - FSTYPE SOURCE SUPER
    const [left, right] = line.split(' - ');
    if (!left || !right || !right.startsWith('nsfs ')) continue;
    const f = left.split(' ');
    if (f[3] !== `net:[${inode}]` || !f[4]) continue;
    out.push(f[4].replace(/\\([0-7]{3})/g, (_, o: string) => String.fromCharCode(parseInt(o, 8))));
  }
  const rank = (p: string): number => (/^\/(var\/)?run\/netns\//.test(p) ? 0 : 1);
  return out.sort((a, b) => rank(a) - rank(b));
}

/** This process's network namespace. */
export function ownNetnsRef(): NetnsRef {
  const inode = inodeOf('/proc/self/ns/net') ?? 0;
  return { inode, path: netnsMounts(inode)[0] ?? null };
}

/** How `/proc/self/ns/net` names a namespace (what holders.ts compares). */
function netnsName(ref: NetnsRef): string {
  return `net:[${ref.inode}]`;
}

export function describeNetns(ref: NetnsRef): string {
  return ref.path ? `${netnsName(ref)} (${ref.path})` : netnsName(ref);
}

/** Where a recorded namespace is from here: this one, a path to enter it by, or gone. */
export function locateNetns(ref: NetnsRef): NetnsWhere {
  if (inodeOf('/proc/self/ns/net') === ref.inode) return { kind: 'here' };
  if (ref.path && inodeOf(ref.path) === ref.inode) return { kind: 'there', path: ref.path };
  const mount = netnsMounts(ref.inode)[0];
  if (mount) return { kind: 'there', path: mount };
  // No bind mount: a process living in it will do (read now, used at once).
  for (const pid of readdirSync('/proc')) {
    if (!/^\d+$/.test(pid)) continue;
    const p = `/proc/${pid}/ns/net`;
    if (inodeOf(p) === ref.inode) return { kind: 'there', path: p };
  }
  return { kind: 'gone' };
}
