// The Debian package under test: built with scripts/package.mjs, installed
// into this machine with apt-get/dpkg, purged again. Whatever a test
// installs is purged at process exit too (also after a failure), and the
// state directory is removed if the test made it: the machine is reused.
import { execFile, spawnSync } from 'node:child_process';
import { existsSync, lstatSync, readFileSync, readdirSync, rmSync, statSync } from 'node:fs';
import { join } from 'node:path';
import { promisify } from 'node:util';
import { ROOT } from './paths.js';

const execFileP = promisify(execFile);

export const PKG = 'qemu-net-helper';
export const STATE = '/run/qemu-net-helper';
const TOOLS = ['/usr/bin/dpkg-deb', '/usr/bin/apt-get', '/usr/bin/systemd-socket-activate', '/usr/bin/lintian', '/usr/bin/dpkg-buildflags'];

let installedByUs = false;
const owned = new Set<string>();
process.on('exit', () => { cleanUp(); });

/** Why the package test cannot run here, or false. */
export function debSkipReason(): string | false {
  if (process.geteuid?.() !== 0) return 'installing a package needs root';
  const missing = TOOLS.filter((t) => !existsSync(t));
  if (missing.length) return `missing ${missing.join(', ')} (scripts/setup.sh installs them)`;
  if (debStatus() !== null) return `${PKG} is already installed on this machine (the test would replace and purge it)`;
  if (existsSync(STATE)) return `${STATE} exists: a broker of another installation may be using it`;
  return false;
}

/** Builds the package of this checkout's dist/ into dir; returns the .deb's path (the script's last line). */
export async function buildDeb(dir: string, version?: string): Promise<string> {
  const { stdout } = await execFileP(process.execPath, [join(ROOT, 'scripts/package.mjs')], {
    cwd: ROOT,
    encoding: 'utf8',
    maxBuffer: 16 << 20,
    env: { ...process.env, QNH_PACKAGE_OUT: dir, ...(version ? { QNH_PACKAGE_VERSION: version } : {}) },
  });
  return stdout.trim().split('\n').pop()!;
}

export interface Run { status: number | null; stdout: string; stderr: string }

let netns: string | null = null;
/** Runs apt-get and dpkg (so the maintainer scripts) inside this network namespace from now on. */
export function runIn(name: string): void { netns = name; }

function sh(cmd: string, args: string[], cwd?: string): Run {
  const r = spawnSync(netns ? 'ip' : cmd, netns ? ['netns', 'exec', netns, cmd, ...args] : args, {
    cwd, encoding: 'utf8', timeout: 300_000,
    env: { PATH: '/usr/sbin:/usr/bin:/sbin:/bin', DEBIAN_FRONTEND: 'noninteractive', LC_ALL: 'C' },
  });
  return { status: r.status, stdout: r.stdout ?? '', stderr: (r.stderr ?? '') + (r.error ? String(r.error) : '') };
}

function must(r: Run, what: string): Run {
  if (r.status !== 0) throw new Error(`${what} failed (${r.status}):\n${r.stdout}\n${r.stderr}`);
  return r;
}

// Other sessions may hold the dpkg lock for a while: wait rather than fail.
// No fsync per file (what Debian's build daemons do): a crash here loses a
// test's throwaway install, nothing else.
const LOCK = ['-o', 'DPkg::Lock::Timeout=300', '-o', 'DPkg::Options::=--force-unsafe-io'];

/** `apt-get install ./FILE` (as the README says); the deb's directory is the working directory. */
export function aptInstall(deb: string): Run {
  installedByUs = true;
  const slash = deb.lastIndexOf('/');
  return must(sh('apt-get', ['install', '-y', ...LOCK, `./${deb.slice(slash + 1)}`], deb.slice(0, slash)), `apt-get install ${deb}`);
}

export function aptRemove(): Run { return must(sh('apt-get', ['remove', '-y', ...LOCK, PKG]), 'apt-get remove'); }
export function aptPurge(): Run { return must(sh('apt-get', ['purge', '-y', ...LOCK, PKG]), 'apt-get purge'); }

/** dpkg's two-letter status ("ii", "rc") and version, or null when dpkg knows nothing of it. */
export function debStatus(): { status: string; version: string } | null {
  const r = sh('dpkg-query', ['-W', '-f=${db:Status-Abbrev}|${Version}', PKG]);
  if (r.status !== 0) return null;
  const [status, version] = r.stdout.split('|');
  if (status!.trim() === 'un') return null;
  return { status: status!.trim(), version: version ?? '' };
}

/** Regular files the package installed (dpkg -L), without directories. */
export function debFiles(): string[] {
  return must(sh('dpkg', ['-L', PKG]), 'dpkg -L').stdout.split('\n').filter((f) => f && existsSync(f) && statSync(f).isFile());
}

export function dpkgAuditClean(): Run { return sh('dpkg', ['--audit']); }
export function aptCheck(): Run { return sh('apt-get', ['check']); }
/** lintian, in the background (it takes a while and needs nothing installed). */
export async function lintian(deb: string): Promise<Run> {
  try {
    const r = await execFileP('lintian', ['--fail-on', 'error,warning', deb], { encoding: 'utf8', maxBuffer: 16 << 20 });
    return { status: 0, stdout: r.stdout, stderr: r.stderr };
  } catch (e) {
    const err = e as { code?: number; stdout?: string; stderr?: string };
    return { status: err.code ?? 1, stdout: err.stdout ?? '', stderr: err.stderr ?? String(e) };
  }
}

/** A path the test made (the state directory, an administrator's file under /etc): removed at clean-up. */
export function own(path: string): void { owned.add(path); }

/** Every path of the package (or of its systemd enablement) still on the machine. */
export function leftovers(): string[] {
  const paths = [
    `/etc/${PKG}`, `/usr/lib/${PKG}`, `/usr/bin/${PKG}`, `/usr/share/doc/${PKG}`, `/usr/share/man/man8/${PKG}.8.gz`,
    `/usr/share/lintian/overrides/${PKG}`, ...['socket', 'service'].flatMap((u) => [
      `/lib/systemd/system/${PKG}.${u}`, `/etc/systemd/system/${PKG}.${u}`, `/etc/systemd/system/sockets.target.wants/${PKG}.${u}`,
    ]),
    // lstat: a dangling mask symlink (-> /dev/null) counts as left over too.
  ].filter((p) => lstatSync(p, { throwIfNoEntry: false }) !== undefined);
  for (const d of ['/var/lib/systemd/deb-systemd-helper-enabled', '/var/lib/systemd/deb-systemd-helper-masked']) {
    for (const f of existsSync(d) ? walk(d) : []) if (f.includes(PKG)) paths.push(f);
  }
  return paths;
}

function walk(dir: string): string[] {
  return readdirSync(dir, { withFileTypes: true }).flatMap((e) => (e.isDirectory() ? walk(join(dir, e.name)) : [join(dir, e.name)]));
}

/**
 * Removes the paths the test made, then purges what it installed (in that
 * order: a file of ours left under /etc/qemu-net-helper would keep dpkg from
 * removing the directory). Safe to call twice.
 */
export function cleanUp(): void {
  for (const p of owned) rmSync(p, { recursive: true, force: true });
  owned.clear();
  if (netns && !existsSync(`/run/netns/${netns}`)) netns = null;
  if (installedByUs && debStatus() !== null) sh('apt-get', ['purge', '-y', ...LOCK, PKG]);
  installedByUs = false;
}

export const readText = (p: string): string => readFileSync(p, 'utf8');
