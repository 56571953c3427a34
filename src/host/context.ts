// The host context: every file, device and program the helper acts on, in one
// place, and who may choose them. A run on someone else's behalf (a broker
// request, or a helper holding privileges its caller did not give it) takes
// them from fixed paths only: the caller's environment, working directory and
// flags choose nothing it opens, runs or deletes. Only a real root caller may
// point them elsewhere (tests use temporary state directories and a fake sysfs).
import { accessSync, constants, readFileSync } from 'node:fs';
import { AccessDeniedError } from '../errors.js';
import { CAP_NET_ADMIN, hasCapability } from '../sys/caps.js';

export const DEFAULT_PATHS = {
  acl: '/etc/qemu-net-helper/bridge.conf',
  config: '/etc/qemu-net-helper',
  stateDir: '/run/qemu-net-helper',
  sysfs: '/sys',
  tun: '/dev/net/tun',
  vhostNet: '/dev/vhost-net',
  broker: '/run/qemu-net-helper/broker.sock',
  switchControl: '/run/qemu-net-helper/switch.ctl',
} as const;

/** PATH of every child we start: system directories only. */
export const SAFE_PATH = '/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin';
const SYSTEM_DIRS = SAFE_PATH.split(':');

/** Environment variables a trusted (root) caller may use to point the helper elsewhere. */
export const ENV = {
  acl: 'QEMU_NET_HELPER_ACL',
  config: 'QEMU_NET_HELPER_CONFIG',
  stateDir: 'QEMU_NET_HELPER_STATE_DIR',
  sysfs: 'QEMU_NET_HELPER_SYSFS',
  tun: 'QEMU_NET_HELPER_TUN',
  vhostNet: 'QEMU_NET_HELPER_VHOST_NET',
  nft: 'QEMU_NET_HELPER_NFT',
  dnsmasq: 'QEMU_NET_HELPER_DNSMASQ',
  fault: 'QEMU_NET_HELPER_FAULT_AFTER_STEP',
  broker: 'QEMU_NET_HELPER_BROKER',
  switchControl: 'QEMU_NET_HELPER_SWITCH',
} as const;

/** Host facts and knobs every backend may need. */
export interface HostContext {
  /** Root of sysfs for SR-IOV discovery, default /sys. */
  sysfsRoot: string;
  /**
   * The sysfs of this network namespace, for per-link facts such as a
   * macvtap's device number: always /sys in use; tests point it elsewhere
   * to make a setup fail after its link exists.
   */
  netSysfsRoot: string;
  /** tun clone device, default /dev/net/tun. */
  tunDevice: string;
  /** vhost-net device, default /dev/vhost-net. */
  vhostNetDevice: string;
  /** State directory, default /run/qemu-net-helper. */
  stateDir: string;
  /** Control socket of the vhost-user switch that serves the vhost-user transport. */
  switchControl: string;
  /** Programs we run, as absolute paths (null: not installed). */
  bin: { nft: string | null; dnsmasq: string | null };
  /** Whether this process may change the network (root or CAP_NET_ADMIN). */
  netAdmin: boolean;
  /** Whether the paths above came from a trusted caller's environment (passed on to our own children). */
  trusted: boolean;
}

const AT_SECURE = 23n;
let secureCache: boolean | undefined;

/**
 * AT_SECURE from the auxiliary vector: the kernel sets it when this program
 * was started with privileges its caller did not have (setuid, setgid, file
 * capabilities). glibc and Node then distrust the environment; so do we.
 */
export function atSecure(): boolean {
  if (secureCache !== undefined) return secureCache;
  try {
    const auxv = readFileSync('/proc/self/auxv');
    for (let off = 0; off + 16 <= auxv.length; off += 16) {
      const type = auxv.readBigUInt64LE(off);
      if (type === 0n) break;
      if (type === AT_SECURE) return (secureCache = auxv.readBigUInt64LE(off + 8) !== 0n);
    }
    secureCache = false;
  } catch {
    // Without /proc we cannot tell: distrust.
    secureCache = true;
  }
  return secureCache;
}

/** Whoever started us is root itself (real uid 0, no privilege gained at exec): its environment may choose paths. */
export function callerIsRoot(): boolean {
  return typeof process.getuid === 'function' && process.getuid() === 0 && !atSecure();
}

/** The first executable `name` in the system directories; the caller's PATH is never searched. */
export function systemBinary(name: string): string | null {
  for (const dir of SYSTEM_DIRS) {
    const p = `${dir}/${name}`;
    try {
      accessSync(p, constants.X_OK);
      return p;
    } catch { /* not here */ }
  }
  return null;
}

/**
 * The host context of a run. `env` is consulted only when `trusted` (a root
 * caller's own environment, or the broker's, started by root); otherwise every
 * path is the fixed default.
 */
export function hostContext(env: NodeJS.ProcessEnv, trusted: boolean, netAdmin: boolean): HostContext {
  const pick = (key: keyof typeof ENV, dflt: string): string => (trusted && env[ENV[key]]) || dflt;
  return {
    sysfsRoot: pick('sysfs', DEFAULT_PATHS.sysfs),
    netSysfsRoot: '/sys',
    tunDevice: pick('tun', DEFAULT_PATHS.tun),
    vhostNetDevice: pick('vhostNet', DEFAULT_PATHS.vhostNet),
    stateDir: pick('stateDir', DEFAULT_PATHS.stateDir),
    switchControl: pick('switchControl', DEFAULT_PATHS.switchControl),
    bin: {
      nft: (trusted && env[ENV.nft]) || systemBinary('nft'),
      dnsmasq: (trusted && env[ENV.dnsmasq]) || systemBinary('dnsmasq'),
    },
    netAdmin,
    trusted,
  };
}

/**
 * The whole environment of a child we start (watcher, relay, dnsmasq): a
 * system PATH and, for a trusted context, the paths that reproduce it. Nothing
 * else of ours or the caller's (no NODE_OPTIONS, no LD_PRELOAD) goes along.
 */
export function childEnv(host?: HostContext): NodeJS.ProcessEnv {
  const env: NodeJS.ProcessEnv = { PATH: SAFE_PATH, LC_ALL: 'C' };
  if (!host?.trusted) return env;
  if (host.stateDir !== DEFAULT_PATHS.stateDir) env[ENV.stateDir] = host.stateDir;
  if (host.sysfsRoot !== DEFAULT_PATHS.sysfs) env[ENV.sysfs] = host.sysfsRoot;
  if (host.tunDevice !== DEFAULT_PATHS.tun) env[ENV.tun] = host.tunDevice;
  if (host.vhostNetDevice !== DEFAULT_PATHS.vhostNet) env[ENV.vhostNet] = host.vhostNetDevice;
  if (host.switchControl !== DEFAULT_PATHS.switchControl) env[ENV.switchControl] = host.switchControl;
  if (host.bin.nft) env[ENV.nft] = host.bin.nft;
  if (host.bin.dnsmasq) env[ENV.dnsmasq] = host.bin.dnsmasq;
  return env;
}

/** This process's own host context: its environment counts only when a real root started it. */
export function processHost(env: NodeJS.ProcessEnv = process.env): HostContext {
  return hostContext(env, callerIsRoot(), hasNetAdmin());
}

/** Root or CAP_NET_ADMIN in the effective set. */
export function hasNetAdmin(): boolean {
  return process.geteuid?.() === 0 || hasCapability(CAP_NET_ADMIN);
}

/**
 * The ACL and configuration directory of a run: a root caller may point them
 * elsewhere (flags, then environment); anyone else gets the fixed ones, and
 * asking for others is refused rather than silently ignored.
 */
export function configPaths(flags: { acl?: string | undefined; config?: string | undefined }, env: NodeJS.ProcessEnv, trusted: boolean): { acl: string; config: string } {
  const base = trusted
    ? { acl: env[ENV.acl] || DEFAULT_PATHS.acl, config: env[ENV.config] || DEFAULT_PATHS.config }
    : { acl: DEFAULT_PATHS.acl, config: DEFAULT_PATHS.config };
  return pathsChosen(flags, base, trusted);
}

/**
 * --acl/--config over `base` (the fixed defaults, or a broker's own files):
 * honoured for a caller who `mayChoose` (root), refused for anyone else.
 */
export function pathsChosen(flags: { acl?: string | undefined; config?: string | undefined }, base: { acl: string; config: string }, mayChoose: boolean): { acl: string; config: string } {
  if (!mayChoose) {
    const asked = flags.acl !== undefined ? '--acl' : flags.config !== undefined ? '--config' : null;
    if (asked) throw new AccessDeniedError(`access denied: ${asked} is only for root (an unprivileged caller cannot choose the files that decide what it may do)`, `drop ${asked}; ${asked === '--acl' ? base.acl : base.config} decides`);
    return base;
  }
  return { acl: flags.acl ?? base.acl, config: flags.config ?? base.config };
}
