// QEMU as a real helper client: `-machine none` starts in well under a second
// and still runs -netdev helpers, both at start-up and through QMP hotplug.
import { type ChildProcess } from 'node:child_process';
import { chmodSync, chownSync, existsSync, mkdtempSync, readdirSync, rmSync, statSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import type { NetNs } from './netns.js';
import { Qmp } from '../../src/demo/qmp.js';

export { Qmp };

export const QEMU = '/usr/bin/qemu-system-x86_64';
export const haveQemu = (): boolean => existsSync(QEMU);

export interface QemuRun {
  proc: ChildProcess;
  qmp: Qmp;
  stderr: () => string;
  /** Resolves with the exit code once QEMU is gone. */
  exited: Promise<number | null>;
  dir: string;
  quit: () => Promise<void>;
}

/** An unprivileged user to run QEMU as (setpriv, no supplementary groups unless given). */
export interface RunAs { uid: number; gid: number; groups?: number[] }

/** The command prefix that drops to `as` (setpriv execs in place: the pid stays QEMU's). */
export function setprivArgs(as: RunAs): string[] {
  return ['setpriv', `--reuid=${as.uid}`, `--regid=${as.gid}`, ...(as.groups?.length ? [`--groups=${as.groups.join(',')}`] : ['--clear-groups'])];
}

/** Starts `qemu-system-x86_64 -machine none` inside ns with extra args and a QMP socket; as another user with `as`. */
export async function startQemu(ns: NetNs, extra: string[], env: NodeJS.ProcessEnv = process.env, as?: RunAs, attempt = 1): Promise<QemuRun> {
  const dir = mkdtempSync(join(tmpdir(), 'qnh-qemu-'));
  // An unprivileged QEMU must be able to bind its QMP socket here.
  if (as) { chownSync(dir, as.uid, as.gid); chmodSync(dir, 0o700); }
  const qmpPath = join(dir, 'qmp.sock');
  const qemuArgv = ['-machine', 'none', '-nodefaults', '-display', 'none', '-S', '-qmp', `unix:${qmpPath},server=on,wait=off`, ...extra];
  const proc = ns.spawn(as ? 'setpriv' : QEMU, as ? [...setprivArgs(as).slice(1), QEMU, ...qemuArgv] : qemuArgv, {
    stdio: ['ignore', 'pipe', 'pipe'],
    env,
  });
  let err = '';
  proc.stderr!.setEncoding('utf8').on('data', (d: string) => { err += d; });
  proc.stdout!.resume();
  const exited = new Promise<number | null>((res) => proc.once('exit', (code) => res(code)));
  let race: { q: Qmp } | { code: number | null };
  try {
    race = await Promise.race([Qmp.connect(qmpPath, undefined, undefined, () => proc.exitCode !== null || proc.signalCode !== null).then((q) => ({ q })), exited.then((code) => ({ code }))]);
  } catch (e) {
    // Seen once in many runs: QEMU 7.2 accepted the QMP connection, then sat in a
    // blocking accept() and never greeted. Such a QEMU is killed and started once more.
    proc.kill('SIGKILL');
    await exited;
    rmSync(dir, { recursive: true, force: true });
    if (attempt < 2) return startQemu(ns, extra, env, as, attempt + 1);
    throw e;
  }
  if (!('q' in race)) {
    rmSync(dir, { recursive: true, force: true });
    throw new Error(`QEMU exited (${race.code}) before QMP came up: ${err.trim()}`);
  }
  const qmp = race.q;
  const quit = async (): Promise<void> => {
    // Bounded by a timer that is cleared once QEMU answered, so no test process is held for it.
    let bound: NodeJS.Timeout | undefined;
    try { await Promise.race([qmp.cmd('quit'), new Promise((r) => { bound = setTimeout(r, 2000); })]); } catch { /* gone */ } finally { clearTimeout(bound); }
    qmp.close();
    const t = setTimeout(() => proc.kill('SIGKILL'), 3000);
    await exited;
    clearTimeout(t);
    rmSync(dir, { recursive: true, force: true });
  };
  return { proc, qmp, stderr: () => err, exited, dir, quit };
}

export { tapsHeldBy } from '../../src/demo/fdinfo.js';

/**
 * macvtap fds have no `iff:` in fdinfo: match the character devices QEMU has
 * open (stat of /proc/PID/fd/N) against each macvtap's dev number in sysfs
 * (read inside the namespace, where /sys shows its links).
 */
export function macvtapsHeldBy(ns: NetNs, pid: number): string[] {
  const byDev = new Map<string, string>();
  const out = ns.exec('sh', '-c', 'for f in /sys/class/net/*/macvtap/tap*/dev; do [ -e "$f" ] && echo "$f $(cat $f)"; done; true');
  for (const line of out.split('\n')) {
    const m = /^\/sys\/class\/net\/([^/]+)\/macvtap\/tap\d+\/dev (\d+):(\d+)$/.exec(line.trim());
    if (m) byDev.set(`${m[2]}:${m[3]}`, m[1]!);
  }
  const held: string[] = [];
  for (const fd of readdirSync(`/proc/${pid}/fd`)) {
    try {
      const st = statSync(`/proc/${pid}/fd/${fd}`);
      if (!st.isCharacterDevice()) continue;
      const key = `${Math.floor(st.rdev / 256) & 0xfff}:${(st.rdev & 0xff) | ((st.rdev >> 12) & 0xfff00)}`;
      const name = byDev.get(key);
      if (name) held.push(name);
    } catch { /* closed meanwhile */ }
  }
  return held;
}
