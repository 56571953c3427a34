// Who holds an endpoint's fd. The helper's peer is QEMU when QEMU runs the
// helper, but libvirt makes the socketpair itself and hands the fd to a QEMU
// it starts afterwards: the peer is then libvirtd, which outlives every guest.
// The watcher therefore follows the fd: the processes that have the tap (fdinfo
// `iff:`) or the macvtap character device (its dev number) open.
import { readdirSync, readFileSync, readlinkSync, statSync } from 'node:fs';
import type { EndpointRecord } from '../state/endpoints.js';

export type FdTarget = { kind: 'tun'; ifname: string } | { kind: 'chardev'; major: number; minor: number };

export function fdTargetOf(rec: EndpointRecord): FdTarget | null {
  const tr = (rec.info.transport ?? {}) as Record<string, unknown>;
  const chardev = (tr.chardev ?? rec.info.chardev) as string | undefined;
  const m = typeof chardev === 'string' ? /^(\d+):(\d+)$/.exec(chardev) : null;
  if (m) return { kind: 'chardev', major: Number(m[1]), minor: Number(m[2]) };
  if (rec.transport === 'tap' && rec.ifname) return { kind: 'tun', ifname: rec.ifname };
  return null;
}

function devNumbers(rdev: number): [number, number] {
  // Linux dev_t as glibc encodes it (major 12 bits, minor 20 bits, split).
  return [((rdev >>> 8) & 0xfff) | (Math.floor(rdev / 2 ** 32) & ~0xfff), (rdev & 0xff) | ((rdev >>> 12) & ~0xff)];
}

/** Whether process `pid` has an fd on the target. */
export function holds(pid: number, t: FdTarget): boolean {
  let fds: string[];
  try {
    fds = readdirSync(`/proc/${pid}/fd`);
  } catch {
    return false;
  }
  for (const fd of fds) {
    try {
      if (t.kind === 'tun') {
        const m = /^iff:\s*(\S+)/m.exec(readFileSync(`/proc/${pid}/fdinfo/${fd}`, 'utf8'));
        if (m && m[1] === t.ifname) return true;
      } else {
        const st = statSync(`/proc/${pid}/fd/${fd}`);
        if (!st.isCharacterDevice()) continue;
        const [maj, min] = devNumbers(st.rdev);
        if (maj === t.major && min === t.minor) return true;
      }
    } catch { /* closed meanwhile */ }
  }
  return false;
}

/** This process's network namespace, as /proc names it ("net:[4026531840]"). */
export function ownNetns(): string | undefined {
  try { return readlinkSync('/proc/self/ns/net'); } catch { return undefined; }
}

function netnsOf(pid: number): string | undefined {
  try { return readlinkSync(`/proc/${pid}/ns/net`); } catch { return undefined; }
}

/**
 * Every process (other than `except`) holding the target. A tap is known by
 * name only, and names repeat across network namespaces: with `netns` given,
 * processes of another namespace are never counted. Scans /proc: for the
 * watcher, not hot paths.
 */
export function holdersOf(t: FdTarget, except: number[] = [], netns?: string): number[] {
  const out: number[] = [];
  for (const name of readdirSync('/proc')) {
    if (!/^\d+$/.test(name)) continue;
    const pid = Number(name);
    if (except.includes(pid)) continue;
    if (netns !== undefined && netnsOf(pid) !== netns) continue;
    if (holds(pid, t)) out.push(pid);
  }
  return out;
}

/** Whether a process other than this one holds the endpoint's fd (false when it has none to follow). Scans /proc. */
export function fdHeldByOthers(rec: EndpointRecord): boolean {
  const target = fdTargetOf(rec);
  return target !== null && holdersOf(target, [process.pid], rec.info.netns as string | undefined).length > 0;
}
