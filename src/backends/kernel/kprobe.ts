// Cheap, read-only answers to "does this kernel have X?" for probe(). Nothing
// here creates an object or loads a module. Sources, most direct first:
//  - /proc/devices lists a character driver once it is registered (macvtap);
//  - /sys/module/<name> exists for loaded modules (and built-ins with parameters);
//  - the kernel config (/proc/config.gz or /boot/config-<release>) says y, m or not set;
//  - /lib/modules/<release>/modules.builtin and modules.dep list built-ins and loadable modules.
// A module that is only loadable counts as present: `ip link add ... type X`
// makes the kernel load it on demand (request_module "rtnl-link-X").
import { existsSync, readFileSync } from 'node:fs';
import { release } from 'node:os';
import { gunzipSync } from 'node:zlib';

export interface KernelFeature {
  /** Kconfig symbol, e.g. CONFIG_MACVTAP. */
  config: string;
  /** Module name, e.g. macvtap. */
  module: string;
  /** Name in /proc/devices when the driver registers a character device. */
  procDevice?: string;
}

export interface FeatureAnswer {
  /** true: present; false: known absent; null: could not tell. */
  present: boolean | null;
  how: string;
}

let configCache: string | null | undefined;

function kernelConfig(): string | null {
  if (configCache !== undefined) return configCache;
  configCache = null;
  try {
    configCache = gunzipSync(readFileSync('/proc/config.gz')).toString('latin1');
  } catch {
    try {
      configCache = readFileSync(`/boot/config-${release()}`, 'latin1');
    } catch { /* neither */ }
  }
  return configCache;
}

function readOr(path: string): string | null {
  try {
    return readFileSync(path, 'latin1');
  } catch {
    return null;
  }
}

function listsModule(text: string | null, module: string): boolean {
  if (!text) return false;
  const re = new RegExp(`/${module.replace(/[-_]/g, '[-_]')}\\.ko(\\.[a-z]+)?[:\\s]`, 'm');
  return re.test(text);
}

export function kernelHas(f: KernelFeature): FeatureAnswer {
  if (f.procDevice) {
    const devices = readOr('/proc/devices');
    if (devices && new RegExp(`^\\s*\\d+ ${f.procDevice}$`, 'm').test(devices)) return { present: true, how: `${f.procDevice} driver registered (/proc/devices)` };
  }
  if (existsSync(`/sys/module/${f.module}`)) return { present: true, how: `${f.module} loaded` };
  const modDir = `/lib/modules/${release()}`;
  const config = kernelConfig();
  if (config) {
    const m = new RegExp(`^${f.config}=([ym])$`, 'm').exec(config);
    if (m?.[1] === 'y') return { present: true, how: `${f.config}=y` };
    if (m?.[1] === 'm') {
      const dep = readOr(`${modDir}/modules.dep`);
      if (dep === null || listsModule(dep, f.module)) return { present: true, how: `${f.config}=m (loaded on demand)` };
      return { present: false, how: `${f.config}=m but ${f.module}.ko is not installed under ${modDir}` };
    }
    return { present: false, how: `${f.config} is not set in this kernel` };
  }
  if (listsModule(readOr(`${modDir}/modules.builtin`), f.module)) return { present: true, how: `${f.module} built in` };
  if (listsModule(readOr(`${modDir}/modules.dep`), f.module)) return { present: true, how: `${f.module} loadable` };
  return { present: null, how: `cannot tell whether the kernel has ${f.module} (no kernel config, no module lists)` };
}

export const FEATURES = {
  macvtap: { config: 'CONFIG_MACVTAP', module: 'macvtap', procDevice: 'macvtap' },
  veth: { config: 'CONFIG_VETH', module: 'veth' },
  tun: { config: 'CONFIG_TUN', module: 'tun' },
  bridge: { config: 'CONFIG_BRIDGE', module: 'bridge' },
  nfTables: { config: 'CONFIG_NF_TABLES', module: 'nf_tables' },
  nftMasq: { config: 'CONFIG_NFT_MASQ', module: 'nft_masq' },
} as const satisfies Record<string, KernelFeature>;
