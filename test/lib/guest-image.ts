// A tiny Linux guest for end-to-end data-path tests: QEMU (TCG) boots the
// Debian kernel straight into a busybox initramfs whose /init
// (test/guest/init) configures one virtio-net NIC, pings or serves, prints
// QNH-* markers on the serial console and reboots, which ends QEMU because it
// runs with -no-reboot. Everything it needs comes from Debian packages on the
// test machine (see missing()), built once and cached under .cache/guest/.
import { spawnSync } from 'node:child_process';
import { createHash, randomBytes } from 'node:crypto';
import {
  accessSync, closeSync, constants, existsSync, mkdirSync, openSync, readdirSync, readFileSync, readSync,
  renameSync, rmSync, statSync, writeFileSync,
} from 'node:fs';
import { basename, delimiter, dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { gzipSync } from 'node:zlib';

// The project root is found from this module's own location (compiled to
// dist/test/lib/, or test/lib/ when run from source) by walking up to the
// directory holding package.json and test/guest/init, so cwd never matters.
function projectRoot(): string {
  let dir = dirname(fileURLToPath(import.meta.url));
  for (;;) {
    if (existsSync(join(dir, 'package.json')) && existsSync(join(dir, 'test', 'guest', 'init'))) return dir;
    const up = dirname(dir);
    if (up === dir) throw new Error(`cannot find the project root above ${fileURLToPath(import.meta.url)}`);
    dir = up;
  }
}

const ROOT = projectRoot();
const GUEST_SRC = join(ROOT, 'test', 'guest');
const CACHE = join(ROOT, '.cache', 'guest');
// Bump when the way the image is assembled changes, so old caches are not reused.
const IMAGE_FORMAT = 2;
// virtio_pci binds the device, virtio_net makes eth0; their dependencies
// (virtio, virtio_ring, failover, ...) are resolved from modules.dep.
const WANTED_MODULES = ['virtio_pci', 'virtio_net'];

export interface GuestImage {
  /** Uncompressed ELF vmlinux: QEMU boots it through PVH, ~2x faster than the bzImage under TCG. */
  kernel: string;
  /** gzip-compressed newc cpio with busybox, the virtio modules and our /init. */
  initrd: string;
  kernelVersion: string;
}

/** Where built images are cached (one subdirectory per kernel + inputs). */
export const GUEST_CACHE_DIR = CACHE;

function which(cmd: string): string | null {
  for (const d of (process.env.PATH ?? '/usr/sbin:/usr/bin:/sbin:/bin').split(delimiter)) {
    const p = join(d, cmd);
    try { accessSync(p, constants.X_OK); return p; } catch { /* next */ }
  }
  return null;
}

export function qemuBinary(): string | null {
  return which('qemu-system-x86_64') ?? (existsSync('/usr/bin/qemu-system-x86_64') ? '/usr/bin/qemu-system-x86_64' : null);
}

/** Kernel versions with both /boot/vmlinuz-V and /lib/modules/V/modules.dep, newest first. */
export function debianKernels(): string[] {
  let names: string[];
  try { names = readdirSync('/boot'); } catch { return []; }
  return names
    .filter((n) => n.startsWith('vmlinuz-'))
    .map((n) => n.slice('vmlinuz-'.length))
    .filter((v) => existsSync(`/lib/modules/${v}/modules.dep`))
    .sort((a, b) => b.localeCompare(a, 'en', { numeric: true }));
}

/**
 * Why guest tests cannot run here at all (QEMU or the kernel package absent),
 * or null. Other missing pieces (busybox-static, xz-utils) are not a reason to
 * skip: ensureGuestImage() fails loudly on them so CI notices.
 */
export function guestSkipReason(): string | null {
  if (!qemuBinary()) return 'qemu-system-x86_64 is not installed (Debian package qemu-system-x86)';
  if (debianKernels().length === 0) return 'no /boot/vmlinuz-* with matching /lib/modules (Debian package linux-image-amd64)';
  return null;
}

// ---------------------------------------------------------------- image build

/** Thrown when the test machine lacks something; names the Debian package. */
export class GuestSetupError extends Error {
  constructor(what: string, pkg: string) {
    super(`test guest: ${what}; install the Debian package ${pkg}`);
    this.name = 'GuestSetupError';
  }
}

export function busyboxPath(): string {
  const p = ['/usr/bin/busybox', '/bin/busybox'].find((c) => existsSync(c));
  if (!p) throw new GuestSetupError('busybox not found', 'busybox-static');
  // The initramfs has no libc, so a dynamically linked busybox (from the
  // `busybox` package, which installs the same path) would not even start.
  if (hasElfInterpreter(p)) throw new GuestSetupError(`${p} is dynamically linked`, 'busybox-static');
  return p;
}

/** True if the ELF64 file has a PT_INTERP program header, i.e. is dynamically linked. */
function hasElfInterpreter(path: string): boolean {
  const fd = openSync(path, 'r');
  try {
    const eh = Buffer.alloc(64);
    readSync(fd, eh, 0, 64, 0);
    if (eh.readUInt32BE(0) !== 0x7f454c46 || eh[4] !== 2) return false;
    const phoff = Number(eh.readBigUInt64LE(0x20));
    const phentsize = eh.readUInt16LE(0x36);
    const phnum = eh.readUInt16LE(0x38);
    const ph = Buffer.alloc(phentsize * phnum);
    readSync(fd, ph, 0, ph.length, phoff);
    for (let i = 0; i < phnum; i++) if (ph.readUInt32LE(i * phentsize) === 3 /* PT_INTERP */) return true;
    return false;
  } finally {
    closeSync(fd);
  }
}

// Compressed payloads we can meet in a bzImage or a module file, and the tool
// (with its Debian package) that unpacks them. Node's zlib has neither xz nor
// zstd, hence the external tools; busybox's own xzcat cannot do it either (it
// rejects the kernel's x86 BCJ-filtered stream).
const DECOMPRESSORS = [
  { magic: Buffer.from('fd377a585a00', 'hex'), ext: '.xz', cmd: 'xz', args: ['-dc', '--single-stream'], pkg: 'xz-utils' },
  { magic: Buffer.from('28b52ffd', 'hex'), ext: '.zst', cmd: 'zstd', args: ['-dcq'], pkg: 'zstd' },
] as const;

function runDecompressor(d: (typeof DECOMPRESSORS)[number], input: Buffer, what: string): Buffer {
  const r = spawnSync(d.cmd, [...d.args], { input, maxBuffer: 1 << 30 });
  if (r.error && (r.error as NodeJS.ErrnoException).code === 'ENOENT') {
    throw new GuestSetupError(`${d.cmd} is needed to unpack ${what}`, d.pkg);
  }
  // --single-stream stops reading after the kernel's stream: the rest of
  // the bzImage we pipe in then meets a closed pipe (EPIPE), which is fine
  // when the tool itself succeeded.
  if (r.error && !((r.error as NodeJS.ErrnoException).code === 'EPIPE' && r.status === 0)) throw r.error;
  if (r.status !== 0) throw new Error(`${d.cmd} failed on ${what}: ${r.stderr.toString().trim()}`);
  return r.stdout;
}

const ELF_MAGIC = Buffer.from('7f454c46', 'hex');

/**
 * The vmlinux inside a bzImage. The bzImage is a small decompressor followed
 * by the compressed ELF kernel; we find the payload by its magic and unpack
 * it. A magic match can in principle be a false positive inside the
 * decompressor code, so every match is tried until one yields an ELF.
 */
export function extractVmlinux(vmlinuz: string): Buffer {
  const img = readFileSync(vmlinuz);
  if (img.subarray(0, 4).equals(ELF_MAGIC)) return img;
  const errors: string[] = [];
  for (const d of DECOMPRESSORS) {
    for (let at = img.indexOf(d.magic); at >= 0; at = img.indexOf(d.magic, at + 1)) {
      try {
        const out = runDecompressor(d, img.subarray(at), `${vmlinuz} (at offset ${at})`);
        if (out.subarray(0, 4).equals(ELF_MAGIC)) return out;
        errors.push(`${d.cmd} at ${at}: not an ELF`);
      } catch (e) {
        if (e instanceof GuestSetupError) throw e;
        errors.push((e as Error).message);
      }
    }
  }
  throw new Error(`no compressed ELF kernel found in ${vmlinuz}${errors.length ? `: ${errors.join('; ')}` : ''}`);
}

function moduleName(path: string): string {
  return basename(path).replace(/\.ko(\.\w+)?$/, '').replace(/-/g, '_');
}

/** The wanted modules and their dependencies, dependencies first, as paths relative to /lib/modules/V. */
export function moduleLoadOrder(kver: string, wanted: readonly string[] = WANTED_MODULES): { name: string; path: string }[] {
  const base = `/lib/modules/${kver}`;
  const deps = new Map<string, { path: string; deps: string[] }>();
  for (const line of readFileSync(join(base, 'modules.dep'), 'utf8').split('\n')) {
    const m = /^([^:]+):\s*(.*)$/.exec(line);
    if (!m) continue;
    deps.set(moduleName(m[1]!), { path: m[1]!, deps: m[2]!.split(/\s+/).filter(Boolean).map(moduleName) });
  }
  let builtin = new Set<string>();
  try {
    builtin = new Set(readFileSync(join(base, 'modules.builtin'), 'utf8').split('\n').filter(Boolean).map(moduleName));
  } catch { /* no list: assume nothing is built in */ }

  const order: { name: string; path: string }[] = [];
  const seen = new Set<string>();
  const visit = (name: string): void => {
    if (seen.has(name)) return;
    seen.add(name);
    if (builtin.has(name)) return; // nothing to load
    const e = deps.get(name);
    if (!e) throw new GuestSetupError(`kernel module ${name} not found under ${base}`, `linux-image-${kver}`);
    for (const d of e.deps) visit(d);
    order.push({ name, path: e.path });
  };
  for (const w of wanted) visit(w);
  return order;
}

export function moduleBytes(kver: string, rel: string): Buffer {
  const path = join(`/lib/modules/${kver}`, rel);
  const raw = readFileSync(path);
  // busybox insmod has no decompression support, so modules go in plain.
  const d = DECOMPRESSORS.find((x) => rel.endsWith(`.ko${x.ext}`));
  return d ? runDecompressor(d, raw, path) : raw;
}

export interface CpioEntry {
  name: string;
  mode: number; // full st_mode, type bits included
  data?: Buffer;
  rdev?: [number, number];
}

/**
 * Serialises a newc ("070701") cpio archive, the format the kernel unpacks
 * as an initramfs. Written here rather than with cpio(1) because it is a
 * few lines, needs no extra package, can create /dev/console without mknod,
 * and gives byte-identical archives (fixed owners and mtimes).
 */
export function newcCpio(entries: CpioEntry[]): Buffer {
  const parts: Buffer[] = [];
  const pad = (n: number): void => { if (n % 4) parts.push(Buffer.alloc(4 - (n % 4))); };
  const hex = (n: number): string => n.toString(16).padStart(8, '0');
  let ino = 1;
  for (const e of [...entries, { name: 'TRAILER!!!', mode: 0 }] as CpioEntry[]) {
    const data = e.data ?? Buffer.alloc(0);
    const name = Buffer.from(`${e.name}\0`);
    const isDir = (e.mode & 0o170000) === 0o040000;
    const fields = [
      e.name === 'TRAILER!!!' ? 0 : ino++, e.mode, 0, 0, isDir ? 2 : 1, 0, data.length,
      0, 0, e.rdev?.[0] ?? 0, e.rdev?.[1] ?? 0, name.length, 0,
    ];
    const header = Buffer.from(`070701${fields.map(hex).join('')}`, 'ascii');
    parts.push(header, name);
    pad(header.length + name.length);
    parts.push(data);
    pad(data.length);
  }
  return Buffer.concat(parts);
}

/**
 * ethtool (Debian's, dynamically linked; there is no static build in Debian)
 * with the shared libraries ldd names, at their own paths, so the guest can
 * run `ethtool -l`. Empty when the host has no ethtool: guests then report
 * queues from sysfs only.
 */
function ethtoolFiles(): { path: string; perm: number }[] {
  const bin = ['/usr/sbin/ethtool', '/sbin/ethtool'].find((p) => existsSync(p));
  if (!bin) return [];
  const r = spawnSync('ldd', [bin], { encoding: 'utf8' });
  if (r.status !== 0) return [];
  const libs = [...r.stdout.matchAll(/(\/\S+\.so[.\d]*)\s/g)].map((m) => m[1]!);
  return [{ path: bin, perm: 0o755 }, ...[...new Set(libs)].map((p) => ({ path: p, perm: 0o755 }))];
}

function buildInitramfs(kver: string, init: Buffer, udhcpcScript: Buffer, modules: { name: string; path: string }[]): Buffer {
  const dir = (name: string): CpioEntry => ({ name, mode: 0o040755 });
  const file = (name: string, data: Buffer, perm = 0o644): CpioEntry => ({ name, mode: 0o100000 | perm, data });
  const ethtool = ethtoolFiles();
  return gzipSync(newcCpio([
    ...['bin', 'sbin', 'usr', 'usr/bin', 'usr/sbin', 'etc', 'lib', 'lib/modules', 'proc', 'sys', 'dev', 'tmp', 'run', 'root'].map(dir),
    // The kernel opens /dev/console for init's stdio before /init could mount devtmpfs.
    { name: 'dev/console', mode: 0o020600, rdev: [5, 1] },
    file('bin/busybox', readFileSync(busyboxPath()), 0o755),
    { name: 'bin/sh', mode: 0o120777, data: Buffer.from('busybox') },
    file('init', init, 0o755),
    file('etc/udhcpc.script', udhcpcScript, 0o755),
    file('etc/qnh-modules', Buffer.from(modules.map((m) => m.name).join('\n') + '\n')),
    ...modules.map((m) => file(`lib/modules/${m.name}.ko`, moduleBytes(kver, m.path))),
    // usr/sbin/ethtool, lib/x86_64-linux-gnu/*.so*, lib64/ld-linux-x86-64.so.2 (dirs first)
    ...ethtoolDirs(ethtool).map(dir),
    ...ethtool.map((f) => file(f.path.slice(1), readFileSync(f.path), f.perm)),
  ]), { level: 6 });
}

const BASE_DIRS = new Set(['bin', 'sbin', 'usr', 'usr/bin', 'usr/sbin', 'etc', 'lib', 'lib/modules', 'proc', 'sys', 'dev', 'tmp', 'run', 'root']);
function ethtoolDirs(files: { path: string }[]): string[] {
  const dirs = new Set<string>();
  for (const f of files) {
    const parts = f.path.slice(1).split('/').slice(0, -1);
    for (let i = 1; i <= parts.length; i++) dirs.add(parts.slice(0, i).join('/'));
  }
  return [...dirs].filter((d) => !BASE_DIRS.has(d)).sort();
}

let imagePromise: Promise<GuestImage> | undefined;

/**
 * Builds (once per machine and input change) the guest kernel and initramfs
 * and returns their paths. The cache key covers the kernel version and file,
 * busybox, the guest scripts and this builder's format; a changed /init
 * therefore gives a new image instead of a stale one.
 */
export function ensureGuestImage(): Promise<GuestImage> {
  imagePromise ??= buildOrReuse().catch((e: unknown) => { imagePromise = undefined; throw e; });
  return imagePromise;
}

async function buildOrReuse(): Promise<GuestImage> {
  const kver = debianKernels()[0];
  if (!kver) throw new GuestSetupError('no /boot/vmlinuz-* with a matching /lib/modules/<version>', 'linux-image-amd64');
  const vmlinuz = `/boot/vmlinuz-${kver}`;
  const init = readFileSync(join(GUEST_SRC, 'init'));
  const udhcpcScript = readFileSync(join(GUEST_SRC, 'udhcpc.script'));
  const bb = busyboxPath();
  const modules = moduleLoadOrder(kver);

  const stamp = (p: string): string => { const s = statSync(p); return `${s.size}:${s.mtimeMs}`; };
  const key = createHash('sha256')
    .update(JSON.stringify({ IMAGE_FORMAT, kver, vmlinuz: stamp(vmlinuz), bb: stamp(bb), modules, ethtool: ethtoolFiles().map((f) => `${f.path}:${stamp(f.path)}`) }))
    .update(init).update(udhcpcScript)
    .digest('hex').slice(0, 16);
  const final = join(CACHE, `${kver}-${key}`);
  const image = { kernel: join(final, 'vmlinux'), initrd: join(final, 'initramfs.cpio.gz'), kernelVersion: kver };
  if (existsSync(image.kernel) && existsSync(image.initrd)) return image;

  // Build into a private directory and rename it into place: rename(2) is
  // atomic, so a concurrent test process sees either no image or a whole one.
  mkdirSync(CACHE, { recursive: true });
  const tmp = join(CACHE, `.tmp-${process.pid}-${randomBytes(4).toString('hex')}`);
  mkdirSync(tmp);
  try {
    writeFileSync(join(tmp, 'vmlinux'), extractVmlinux(vmlinuz));
    writeFileSync(join(tmp, 'initramfs.cpio.gz'), buildInitramfs(kver, init, udhcpcScript, modules));
    try {
      renameSync(tmp, final);
    } catch (e) {
      // Another process won the race (the target exists and is not empty).
      const code = (e as NodeJS.ErrnoException).code;
      if (code !== 'ENOTEMPTY' && code !== 'EEXIST') throw e;
    }
  } finally {
    rmSync(tmp, { recursive: true, force: true });
  }
  pruneCache(basename(final));
  return image;
}

/**
 * Each image is ~70 MB; drop other images and abandoned temp dirs once they
 * are an hour old (a younger one may belong to a run still booting it).
 */
function pruneCache(keep: string): void {
  try {
    for (const n of readdirSync(CACHE)) {
      if (n === keep) continue;
      const p = join(CACHE, n);
      if (Date.now() - statSync(p).mtimeMs > 3600_000) rmSync(p, { recursive: true, force: true });
    }
  } catch { /* best effort */ }
}
