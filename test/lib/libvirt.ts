// Real libvirt in session mode for tests: a throwaway non-root user with its
// own HOME/XDG directories (qemu.conf sets bridge_helper), and that user's
// libvirtd started by us inside a test namespace, so the daemon, the helper it
// runs and QEMU all live there. We start libvirtd ourselves instead of letting
// virsh autostart it: the autostarted daemon gets only a filtered environment
// (HOME, PATH, XDG_*, LC_ALL=C; measured), while libvirtd passes its own whole
// environment to bridge_helper — the only way QEMU_NET_HELPER_BROKER reaches
// the helper without a wrapper script. Everything is undone by close(), also
// at process exit: domains destroyed, every process of the user killed, the
// user deleted, the directories removed.
import { execFileSync, spawnSync, type ChildProcess } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import { chmodSync, existsSync, mkdirSync, mkdtempSync, readdirSync, readFileSync, rmSync, statSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import type { NetNs } from './netns.js';

export const LIBVIRTD = '/usr/sbin/libvirtd';
export const VIRSH = '/usr/bin/virsh';

export function libvirtSkipReason(): string | null {
  for (const [p, pkg] of [[LIBVIRTD, 'libvirt-daemon'], [VIRSH, 'libvirt-clients'], ['/usr/lib/x86_64-linux-gnu/libvirt/connection-driver/libvirt_driver_qemu.so', 'libvirt-daemon-driver-qemu']] as const) {
    if (!existsSync(p)) return `${p} is missing (Debian package ${pkg})`;
  }
  return null;
}

export interface SessionOptions {
  /** bridge_helper in the user's qemu.conf. */
  bridgeHelper: string;
  /** Extra environment for libvirtd (and so for bridge_helper and QEMU). */
  env?: NodeJS.ProcessEnv;
  startTimeoutMs?: number;
}

export interface VirshResult { code: number | null; stdout: string; stderr: string }

export interface LibvirtSession {
  user: string;
  uid: number;
  gid: number;
  /** Temp root (0755): home/ is the user's HOME; files the user's QEMU must read go here too. */
  dir: string;
  home: string;
  runtimeDir: string;
  libvirtd: ChildProcess;
  /** libvirtd's own stderr so far. */
  log: () => string;
  virsh: (...args: string[]) => VirshResult;
  /** Pid of a running domain's QEMU (session pid file), or null. */
  qemuPid: (domain: string) => number | null;
  close: () => Promise<void>;
}

const cleanups = new Set<() => void>();
process.on('exit', () => { for (const c of [...cleanups]) c(); });

function pidsOfUid(uid: number): number[] {
  const out: number[] = [];
  for (const e of readdirSync('/proc')) {
    if (!/^\d+$/.test(e)) continue;
    try { if (statSync(`/proc/${e}`).uid === uid) out.push(Number(e)); } catch { /* gone */ }
  }
  return out;
}

export async function startLibvirtSession(ns: NetNs, opts: SessionOptions): Promise<LibvirtSession> {
  const user = `qnhlv${randomBytes(3).toString('hex')}`;
  const dir = mkdtempSync(join(tmpdir(), 'qnh-libvirt-'));
  chmodSync(dir, 0o755);
  const home = join(dir, 'home');
  const runtimeDir = join(home, 'run');
  let uid = -1;
  let libvirtd: ChildProcess | undefined;

  // Synchronous so that it also runs from the exit handler.
  const cleanup = (): void => {
    cleanups.delete(cleanup);
    if (uid >= 0) {
      // The user exists only for this test: every process it has is ours
      // (libvirtd, QEMU, a helper), wherever it runs.
      for (const pid of pidsOfUid(uid)) { try { process.kill(pid, 'SIGKILL'); } catch { /* gone */ } }
      spawnSync('userdel', [user], { stdio: 'ignore' });
    }
    rmSync(dir, { recursive: true, force: true });
  };
  cleanups.add(cleanup);

  try {
    execFileSync('useradd', ['--no-create-home', '--home-dir', home, '--shell', '/usr/sbin/nologin', '--user-group', user], { stdio: 'pipe' });
    uid = Number(execFileSync('id', ['-u', user], { encoding: 'utf8' }).trim());
    const gid = Number(execFileSync('id', ['-g', user], { encoding: 'utf8' }).trim());
    for (const d of [home, join(home, '.config', 'libvirt'), join(home, '.cache'), runtimeDir]) {
      mkdirSync(d, { recursive: true, mode: 0o700 });
    }
    // stdio_handler=file: no session virtlogd to start (and kill) too.
    writeFileSync(join(home, '.config', 'libvirt', 'qemu.conf'), `bridge_helper = "${opts.bridgeHelper}"\nstdio_handler = "file"\n`);
    execFileSync('chown', ['-R', `${uid}:${gid}`, home]);

    const userEnv: NodeJS.ProcessEnv = {
      PATH: '/usr/sbin:/usr/bin:/sbin:/bin', HOME: home, USER: user, LOGNAME: user,
      XDG_RUNTIME_DIR: runtimeDir, XDG_CONFIG_HOME: join(home, '.config'), XDG_CACHE_HOME: join(home, '.cache'),
    };
    const asUser = ['setpriv', `--reuid=${uid}`, `--regid=${gid}`, '--init-groups'];
    let log = '';
    // --timeout would let it exit by itself while idle; we stop it ourselves.
    libvirtd = ns.spawn(asUser[0]!, [...asUser.slice(1), LIBVIRTD], { stdio: ['ignore', 'ignore', 'pipe'], env: { ...userEnv, ...opts.env } });
    libvirtd.stderr!.setEncoding('utf8').on('data', (d: string) => { log += d; });
    const sock = join(runtimeDir, 'libvirt', 'libvirt-sock');
    const deadline = Date.now() + (opts.startTimeoutMs ?? 30_000);
    while (!existsSync(sock)) {
      if (libvirtd.exitCode !== null || libvirtd.signalCode !== null) throw new Error(`session libvirtd exited: ${log.trim()}`);
      if (Date.now() > deadline) throw new Error(`session libvirtd did not create ${sock}: ${log.trim()}`);
      await new Promise((r) => setTimeout(r, 100));
    }

    const virsh = (...args: string[]): VirshResult => {
      // Same namespace and user as the daemon; the daemon is running, so virsh
      // only connects (an autostarted one would lack opts.env).
      const r = spawnSync('ip', ['netns', 'exec', ns.name, ...asUser, VIRSH, '-q', '-c', 'qemu:///session', ...args], { encoding: 'utf8', env: userEnv, timeout: 180_000 });
      return { code: r.status, stdout: r.stdout ?? '', stderr: r.stderr ?? '' };
    };
    const qemuPid = (domain: string): number | null => {
      try { return Number(readFileSync(join(runtimeDir, 'libvirt', 'qemu', 'run', `${domain}.pid`), 'utf8').trim()) || null; } catch { return null; }
    };
    const d = libvirtd;
    const close = async (): Promise<void> => {
      if (!cleanups.has(cleanup)) return;
      const list = virsh('list', '--name');
      for (const name of list.stdout.split('\n').map((s) => s.trim()).filter(Boolean)) virsh('destroy', name);
      if (d.exitCode === null && d.signalCode === null) {
        const exited = new Promise((r) => d.once('exit', r));
        d.kill('SIGTERM');
        const t = setTimeout(() => d.kill('SIGKILL'), 5000);
        await exited;
        clearTimeout(t);
      }
      cleanup();
    };
    return { user, uid, gid, dir, home, runtimeDir, libvirtd, log: () => log, virsh, qemuPid, close };
  } catch (e) {
    libvirtd?.kill('SIGKILL');
    cleanup();
    throw e;
  }
}

