// A tiny Linux guest for end-to-end data-path tests: QEMU (TCG) boots the
// Debian kernel straight into a busybox initramfs whose /init
// (test/guest/init) configures one virtio-net NIC, pings or serves, prints
// QNH-* markers on the serial console and reboots, which ends QEMU because it
// runs with -no-reboot. Everything it needs comes from Debian packages on the
// test machine (see missing()), built once and cached under .cache/guest/.
import { spawn, spawnSync, type ChildProcess } from 'node:child_process';
import { createHash, randomBytes } from 'node:crypto';
import {
  accessSync, closeSync, constants, existsSync, mkdirSync, openSync, readdirSync, readFileSync, readSync,
  renameSync, rmSync, statSync, writeFileSync,
} from 'node:fs';
import { basename, delimiter, dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { gzipSync } from 'node:zlib';
import type { NetNs } from './netns.js';

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
const IMAGE_FORMAT = 1;
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
function debianKernels(): string[] {
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

function busyboxPath(): string {
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
  if (r.error) throw r.error;
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
function extractVmlinux(vmlinuz: string): Buffer {
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
function moduleLoadOrder(kver: string): { name: string; path: string }[] {
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
  for (const w of WANTED_MODULES) visit(w);
  return order;
}

function moduleBytes(kver: string, rel: string): Buffer {
  const path = join(`/lib/modules/${kver}`, rel);
  const raw = readFileSync(path);
  // busybox insmod has no decompression support, so modules go in plain.
  const d = DECOMPRESSORS.find((x) => rel.endsWith(`.ko${x.ext}`));
  return d ? runDecompressor(d, raw, path) : raw;
}

interface CpioEntry {
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
function newcCpio(entries: CpioEntry[]): Buffer {
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

function buildInitramfs(kver: string, init: Buffer, udhcpcScript: Buffer, modules: { name: string; path: string }[]): Buffer {
  const dir = (name: string): CpioEntry => ({ name, mode: 0o040755 });
  const file = (name: string, data: Buffer, perm = 0o644): CpioEntry => ({ name, mode: 0o100000 | perm, data });
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
  ]), { level: 6 });
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
    .update(JSON.stringify({ IMAGE_FORMAT, kver, vmlinuz: stamp(vmlinuz), bb: stamp(bb), modules }))
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

// ---------------------------------------------------------------- booting

/** Settings for test/guest/init, passed as qnh.KEY=VALUE on the kernel command line. */
export interface GuestSettings {
  /** ping (default): configure, ping peer, exit. serve: configure, answer pings for `wait` s. dhcp: udhcpc, then ping. */
  mode?: 'ping' | 'serve' | 'dhcp';
  /** Interface name (eth0). */
  iface?: string;
  /** Address with prefix, e.g. 10.0.0.2/24; required for ping and serve. */
  ip?: string;
  mac?: string;
  mtu?: number;
  gw?: string;
  /** Address to ping; dhcp mode defaults to the lease's router. */
  peer?: string;
  count?: number;
  /** ICMP payload size. */
  size?: number;
  /** Seconds between echo requests (0.2). */
  interval?: number;
  /** Seconds after which ping gives up (count + 10). */
  deadline?: number;
  /** serve mode: seconds to stay up (30). */
  wait?: number;
  /** Seconds to wait for carrier before going on anyway (10). */
  carrier?: number;
}

export interface GuestOptions {
  /** Extra QEMU arguments, normally the NIC: -netdev/-device/-chardev (see tapNicArgs, vhostUserNicArgs). */
  args?: string[];
  settings?: GuestSettings;
  /** Extra kernel command-line words. */
  append?: string[];
  /**
   * Back guest RAM with a shared memfd, which vhost-user needs to map it.
   * Defaults to on when args contain a vhost-user netdev.
   */
  sharedMemory?: boolean;
  memoryMb?: number;
  /** Run QEMU inside this namespace (taps and bridges named in args live there). */
  ns?: NetNs;
  /** Hard limit on QEMU's life from spawn; it is killed afterwards (60 s). */
  timeoutMs?: number;
  /** Name used in error messages, useful with several guests. */
  name?: string;
  /** Called with every serial-console line as it arrives (debugging). */
  onLine?: (line: string) => void;
  /** QEMU's environment (a helper it runs inherits it); default this process's. */
  env?: NodeJS.ProcessEnv;
  /** Extra fds QEMU inherits as 3, 4, ... (e.g. `-netdev socket,fd=3`). */
  fds?: number[];
}

export interface GuestMarker {
  /** e.g. QNH-PING-OK */
  name: string;
  /** What followed the name on the line, without the guest time. */
  text: string;
  /** Milliseconds from spawning QEMU to the line arriving. */
  atMs: number;
  /** Guest uptime in seconds when the marker was printed, if present. */
  guestTime?: number;
}

export interface GuestResult {
  /** Serial console output, \r removed. */
  output: string;
  /** QEMU's own stderr. */
  stderr: string;
  /** null when QEMU was killed. */
  exitCode: number | null;
  signal: NodeJS.Signals | null;
  markers: GuestMarker[];
  /** True if the hard timeout killed QEMU. */
  timedOut: boolean;
  elapsedMs: number;
}

// Not anchored at the line start: a kernel message can land in front of a
// marker on the shared console. /init appends its uptime as " [t=SECONDS]".
const MARKER_RE = /\b(QNH-[A-Z0-9]+(?:-[A-Z0-9]+)*)(?:\s+(.*))?$/;
const GUEST_TIME_RE = /\s*\[t=([\d.]+)\]\s*$/;
const normalise = (m: string): string => (m.startsWith('QNH-') ? m : `QNH-${m}`);

// Killed at process exit too, so a crashed test cannot leave QEMU spinning a
// CPU on the (reused) CI machine.
const liveGuests = new Set<ChildProcess>();
process.on('exit', () => { for (const p of liveGuests) { try { p.kill('SIGKILL'); } catch { /* gone */ } } });

function cmdlineValue(key: string, v: string | number): string {
  const s = String(v);
  // The kernel splits its command line on spaces and /init reads it unquoted.
  if (!/^[\w.:/,+@-]+$/.test(s)) throw new Error(`guest setting ${key}=${JSON.stringify(s)} has characters the kernel command line cannot carry`);
  return `qnh.${key === 'iface' ? 'if' : key}=${s}`;
}

export function qemuArgs(image: GuestImage, opts: GuestOptions): string[] {
  const mem = opts.memoryMb ?? 256;
  const extra = opts.args ?? [];
  const shared = opts.sharedMemory ?? extra.some((a, i) => extra[i - 1] === '-netdev' && a.startsWith('vhost-user'));
  const settings = Object.entries(opts.settings ?? {})
    .filter(([, v]) => v !== undefined)
    .map(([k, v]) => cmdlineValue(k, v as string | number));
  return [
    '-machine', `pc,accel=tcg${shared ? ',memory-backend=qnhmem' : ''}`,
    '-cpu', 'max', '-m', String(mem), '-smp', '1',
    '-nodefaults', '-no-user-config', '-display', 'none', '-no-reboot',
    '-serial', 'stdio',
    ...(shared ? ['-object', `memory-backend-memfd,id=qnhmem,size=${mem}M,share=on`] : []),
    '-kernel', image.kernel, '-initrd', image.initrd,
    // quiet keeps kernel chatter off the console the markers share;
    // panic=-1 turns a guest panic into a reboot, i.e. a QEMU exit.
    '-append', ['console=ttyS0', 'quiet', 'panic=-1', ...settings, ...(opts.append ?? [])].join(' '),
    ...extra,
  ];
}

/** A running guest. Every failure path kills QEMU. */
export class Guest {
  readonly markers: GuestMarker[] = [];
  /** Resolves once QEMU is gone; never rejects. */
  readonly done: Promise<GuestResult>;
  private out = '';
  private partial = '';
  private err = '';
  private timedOut = false;
  private exited = false;
  private readonly started = Date.now();
  private readonly listeners = new Set<() => void>();

  constructor(private readonly proc: ChildProcess, private readonly opts: GuestOptions) {
    liveGuests.add(proc);
    proc.stdout!.setEncoding('utf8').on('data', (d: string) => this.onSerial(d));
    proc.stderr!.setEncoding('utf8').on('data', (d: string) => { this.err += d; });
    const hard = setTimeout(() => { this.timedOut = true; proc.kill('SIGKILL'); }, opts.timeoutMs ?? 60_000);
    this.done = new Promise<GuestResult>((res) => {
      let spawnError: Error | undefined;
      proc.once('error', (e) => { spawnError = e; });
      proc.once('close', (code, signal) => {
        clearTimeout(hard);
        liveGuests.delete(proc);
        if (this.partial) this.onSerial('\n');
        if (spawnError) this.err += `\nspawn failed: ${spawnError.message}`;
        this.exited = true;
        res(this.snapshot(code, signal));
        this.notify();
      });
    });
  }

  get pid(): number | undefined { return this.proc.pid; }
  get label(): string { return this.opts.name ?? 'guest'; }
  output(): string { return this.out; }
  stderr(): string { return this.err; }

  has(name: string): boolean { return this.markers.some((m) => m.name === normalise(name)); }
  marker(name: string): GuestMarker | undefined { return this.markers.find((m) => m.name === normalise(name)); }

  /**
   * Resolves with the first marker of that name (also one seen earlier).
   * Rejects, killing QEMU, if QEMU exits first, the hard timeout fires, or
   * timeoutMs passes.
   */
  async waitFor(name: string, timeoutMs?: number): Promise<GuestMarker> {
    const want = normalise(name);
    let timer: NodeJS.Timeout | undefined;
    let listener: (() => void) | undefined;
    try {
      return await new Promise<GuestMarker>((res, rej) => {
        listener = () => {
          const m = this.marker(want);
          if (m) res(m);
          else if (this.exited) rej(new Error(this.describe(`QEMU exited before ${want}`)));
        };
        this.listeners.add(listener);
        if (timeoutMs !== undefined) timer = setTimeout(() => rej(new Error(this.describe(`no ${want} within ${timeoutMs} ms`))), timeoutMs);
        listener();
      });
    } catch (e) {
      await this.kill();
      throw e;
    } finally {
      if (listener) this.listeners.delete(listener);
      clearTimeout(timer);
    }
  }

  /** Waits for QEMU to exit by itself (bounded by the hard timeout). */
  async result(): Promise<GuestResult> { return this.done; }

  /** Kills QEMU (if still running) and returns what it produced. */
  async kill(): Promise<GuestResult> {
    if (!this.exited) this.proc.kill('SIGKILL');
    return this.done;
  }

  /** An error message with the tail of the console and QEMU's stderr. */
  describe(what: string): string {
    const tail = this.out.split('\n').slice(-40).join('\n');
    const why = this.timedOut ? ` (hard timeout of ${this.opts.timeoutMs ?? 60_000} ms hit)` : '';
    return `${this.label}: ${what}${why}\n--- serial (tail) ---\n${tail}\n--- qemu stderr ---\n${this.err.trim()}`;
  }

  private onSerial(d: string): void {
    this.partial += d.replace(/\r/g, '');
    let i: number;
    while ((i = this.partial.indexOf('\n')) >= 0) {
      const line = this.partial.slice(0, i);
      this.partial = this.partial.slice(i + 1);
      this.out += `${line}\n`;
      this.opts.onLine?.(line);
      const m = MARKER_RE.exec(line);
      if (m) {
        const t = GUEST_TIME_RE.exec(m[2] ?? '');
        this.markers.push({
          name: m[1]!, text: (t ? (m[2] ?? '').slice(0, t.index) : m[2] ?? '').trim(), atMs: Date.now() - this.started,
          ...(t ? { guestTime: Number(t[1]) } : {}),
        });
        this.notify();
      }
    }
  }

  private notify(): void { for (const l of [...this.listeners]) l(); }

  private snapshot(code: number | null, signal: NodeJS.Signals | null): GuestResult {
    return {
      output: this.out, stderr: this.err, exitCode: code, signal, markers: [...this.markers],
      timedOut: this.timedOut, elapsedMs: Date.now() - this.started,
    };
  }
}

/** Builds the image if needed and starts QEMU; returns without waiting for anything. */
export async function startGuest(opts: GuestOptions = {}): Promise<Guest> {
  const image = await ensureGuestImage();
  const qemu = qemuBinary();
  if (!qemu) throw new GuestSetupError('qemu-system-x86_64 not found', 'qemu-system-x86');
  const args = qemuArgs(image, opts);
  // `ip netns exec` execs QEMU in place, so the pid we hold is QEMU's.
  const stdio = ['ignore', 'pipe', 'pipe'] as const;
  const env = opts.env ?? process.env;
  const all = [...stdio, ...(opts.fds ?? [])];
  const proc = opts.ns ? opts.ns.spawn(qemu, args, { stdio: all, env }) : spawn(qemu, args, { stdio: all, env });
  return new Guest(proc, opts);
}

/**
 * Boots a guest and resolves when the `until` marker appears (QEMU is then
 * killed) or, without `until`, when QEMU exits (the guest reboots after
 * QNH-DONE). Rejects, with the console tail, if the hard timeout fires.
 */
export async function bootGuest(opts: GuestOptions & { until?: string } = {}): Promise<GuestResult> {
  const g = await startGuest(opts);
  try {
    if (opts.until) {
      // Settles on the marker or on exit; an exit without it is for the caller to judge.
      await g.waitFor(opts.until).catch(() => undefined);
      const r = await g.kill();
      if (r.timedOut) throw new Error(g.describe(`no ${normalise(opts.until)}`));
      return r;
    }
    const r = await g.result();
    if (r.timedOut) throw new Error(g.describe('guest did not finish'));
    return r;
  } finally {
    await g.kill();
  }
}

// ---------------------------------------------------------------- NIC args

/** A virtio-net NIC on an existing tap (created by the caller, e.g. in a namespace). */
export function tapNicArgs(ifname: string, opts: { id?: string; mac?: string } = {}): string[] {
  const id = opts.id ?? 'n0';
  return [
    '-netdev', `tap,id=${id},ifname=${ifname},script=no,downscript=no`,
    '-device', `virtio-net-pci,netdev=${id}${opts.mac ? `,mac=${opts.mac}` : ''}`,
  ];
}

/**
 * A virtio-net NIC on a vhost-user socket (QEMU is the client unless
 * server is set; as server, QEMU start-up still blocks until the back-end
 * connects). Needs shared guest memory, which startGuest turns on by itself
 * for a vhost-user netdev. vectors=0: QEMU 7.2 under TCG segfaults with vhost-user
 * when the device has MSI-X.
 */
export function vhostUserNicArgs(socket: string, opts: { id?: string; mac?: string; server?: boolean; reconnect?: number } = {}): string[] {
  const id = opts.id ?? 'n0';
  const chardev = opts.server
    ? `socket,id=${id}c,path=${socket},server=on,wait=off`
    : `socket,id=${id}c,path=${socket}${opts.reconnect ? `,reconnect=${opts.reconnect}` : ''}`;
  return [
    '-chardev', chardev,
    '-netdev', `vhost-user,id=${id},chardev=${id}c`,
    '-device', `virtio-net-pci,netdev=${id},vectors=0${opts.mac ? `,mac=${opts.mac}` : ''}`,
  ];
}

