// Booting the tiny TCG test guest (image: guest-image.ts) and reading its
// serial-console markers.
import { createHash } from 'node:crypto';
import { spawn, type ChildProcess } from 'node:child_process';
import type { NetNs } from './netns.js';
import { ensureGuestImage, GuestSetupError, qemuBinary, type GuestImage } from './guest-image.js';

export { ensureGuestImage, guestSkipReason, GuestSetupError, qemuBinary, GUEST_CACHE_DIR, type GuestImage } from './guest-image.js';

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
  /** serve mode: addresses (comma-separated) to ping about once a second, printing QNH-REACH-UP/DOWN ADDR on every change. */
  watch?: string;
  /** 1: print QNH-QUEUES (sysfs rx-/tx- queue counts) and QNH-ETHTOOL lines (`ethtool -l`) once up. */
  queues?: number;
  /** 1: print QNH-FEATURES (negotiated virtio feature bits) and QNH-OFFLOAD lines (`ethtool -k`). */
  features?: number;
  /** serve mode: TCP ports (comma-separated) each accepting one connection; QNH-TCP-RECEIVED PORT MD5 BYTES. */
  listen?: string;
  /** serve mode: IP:PORT targets (comma-separated) to send `sendkb` KiB of random bytes to; QNH-TCP-DATA MD5 BYTES, QNH-TCP-SENT IP:PORT. */
  send?: string;
  sendkb?: number;
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
  /** Virtual CPUs (1); virtio-net enables min(CPUs, queue pairs) queues at boot. */
  smp?: number;
  /** Run QEMU inside this namespace (taps and bridges named in args live there). */
  ns?: NetNs;
  /** Hard limit on QEMU's life from spawn; it is killed afterwards (180 s; a boot takes 8-9 s at load average 16). */
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
    '-cpu', 'max', '-m', String(mem), '-smp', String(opts.smp ?? 1),
    '-nodefaults', '-no-user-config', '-display', 'none', '-no-reboot',
    '-serial', 'stdio',
    ...(shared ? ['-object', `memory-backend-memfd,id=qnhmem,size=${mem}M,share=on`] : []),
    '-kernel', image.kernel, '-initrd', image.initrd,
    // quiet keeps kernel chatter off the console the markers share;
    // panic=-1 turns a guest panic into a reboot, i.e. a QEMU exit;
    // no_timer_check: on a loaded host TCG misses the IO-APIC timer probe and the guest panics.
    '-append', ['console=ttyS0', 'quiet', 'panic=-1', 'no_timer_check', ...settings, ...(opts.append ?? [])].join(' '),
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
    const hard = setTimeout(() => { this.timedOut = true; proc.kill('SIGKILL'); }, opts.timeoutMs ?? 180_000);
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

  /** The last QNH-REACH-UP/DOWN state seen for `addr` (qnh.watch), or null. */
  reach(addr: string): 'up' | 'down' | null {
    for (let i = this.markers.length - 1; i >= 0; i--) {
      const m = this.markers[i]!;
      if (m.text === addr && m.name === 'QNH-REACH-UP') return 'up';
      if (m.text === addr && m.name === 'QNH-REACH-DOWN') return 'down';
    }
    return null;
  }
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
    const why = this.timedOut ? ` (hard timeout of ${this.opts.timeoutMs ?? 180_000} ms hit)` : '';
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
/** `device`: extra virtio-net-pci properties, e.g. 'csum=off,guest_csum=off' (comma-separated). */
export function vhostUserNicArgs(socket: string, opts: { id?: string; mac?: string; server?: boolean; reconnect?: number; queues?: number; device?: string } = {}): string[] {
  const id = opts.id ?? 'n0';
  const chardev = opts.server
    ? `socket,id=${id}c,path=${socket},server=on,wait=off`
    : `socket,id=${id}c,path=${socket}${opts.reconnect ? `,reconnect=${opts.reconnect}` : ''}`;
  // queues > 1: one vhost_dev per queue pair in QEMU, all on this one socket (the back-end needs --queues too).
  const mq = (opts.queues ?? 1) > 1;
  return [
    '-chardev', chardev,
    '-netdev', `vhost-user,id=${id},chardev=${id}c${mq ? `,queues=${opts.queues}` : ''}`,
    '-device', `virtio-net-pci,netdev=${id},vectors=0${mq ? ',mq=on' : ''}${opts.mac ? `,mac=${opts.mac}` : ''}${opts.device ? `,${opts.device}` : ''}`,
  ];
}



/** The texts of a guest's console markers named `name`, in order. */
export const markerTexts = (g: Guest, name: string): string[] => g.markers.filter((m) => m.name === name).map((m) => m.text);

/** MD5 of a byte string in hex: what the guest's busybox md5sum prints. */
export const md5 = (b: Buffer): string => createHash('md5').update(b).digest('hex');
