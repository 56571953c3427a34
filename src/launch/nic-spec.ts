// `run --nic SPEC`: one NIC as the helper's policy flags in one word,
// key=value pairs separated by commas (mode=bridge,br=br0,queues=4,vhost=on).
// Pure: parsed into the helper's own argument shape, so profiles, defaults and
// the policy machinery treat a `run` NIC exactly like a helper request.
import { UsageError } from '../errors.js';
import type { HelperArgs } from '../helper/args.js';
import { parseGuestMac, formatMac } from '../net/mac.js';
import { checkInterfaceName } from '../net/ifname.js';

/** on: vhost-net or fail; off: never; auto (default): when /dev/vhost-net opens; user: a vhost-user port of our switch. */
export type VhostWish = 'on' | 'off' | 'auto' | 'user';

export interface NicSpec {
  /** QEMU netdev id (default n0, n1, ...). */
  id: string;
  args: HelperArgs;
  vhost: VhostWish;
  /** Guest MAC for QEMU's -device (also the macvtap's, when given). */
  mac?: string;
  /** The SPEC as written, for messages. */
  text: string;
  /** Deprecation lines for old spellings it used (printed on stderr by the launcher). */
  warnings: string[];
}

// Keys are the helper's flags without their dashes (kebab-case, like every
// flag); JSON (profiles, CNI, --json) spells the same things in camelCase.
const KEYS = ['mode', 'br', 'dev', 'mac', 'mtu', 'queues', 'vhost', 'profile', 'config', 'vf-pool', 'id'] as const;
/** Old spellings, accepted with a deprecation line for one release. */
const DEPRECATED_KEYS: Record<string, (typeof KEYS)[number]> = { vfpool: 'vf-pool' };
const HINT = `a NIC is key=value,... with keys ${KEYS.join(', ')} (vf-pool entries separated by '+')`;

export function parseNicSpec(text: string, index: number): NicSpec {
  const seen = new Map<string, string>();
  const warnings: string[] = [];
  for (const part of text.split(',')) {
    const m = /^([a-z][a-z-]*)=(.*)$/s.exec(part);
    if (!m) throw new UsageError(`--nic '${text}': '${part}' is not key=value`, HINT);
    const [, written, value] = m as unknown as [string, string, string];
    const key = DEPRECATED_KEYS[written] ?? written;
    if (key !== written) warnings.push(`--nic key '${written}' is deprecated, write '${key}' (the old spelling goes in the next release)`);
    if (!(KEYS as readonly string[]).includes(key)) throw new UsageError(`--nic '${text}': unknown key '${key}'`, HINT);
    if (seen.has(key)) throw new UsageError(`--nic '${text}': '${key}' given twice`, HINT);
    if (value === '') throw new UsageError(`--nic '${text}': '${key}' has no value`, HINT);
    seen.set(key, value);
  }
  const num = (key: string, min: number, max: number): number | undefined => {
    const v = seen.get(key);
    if (v === undefined) return undefined;
    if (!/^\d{1,6}$/.test(v) || Number(v) < min || Number(v) > max) throw new UsageError(`--nic '${text}': ${key}='${v}' is not a number from ${min} to ${max}`, HINT);
    return Number(v);
  };
  const vhost = seen.get('vhost') ?? 'auto';
  if (vhost !== 'on' && vhost !== 'off' && vhost !== 'auto' && vhost !== 'user') throw new UsageError(`--nic '${text}': vhost='${vhost}' is not on, off, auto or user`, HINT);
  const id = seen.get('id') ?? `n${index}`;
  if (!/^[A-Za-z][A-Za-z0-9_.-]{0,31}$/.test(id)) throw new UsageError(`--nic '${text}': id='${id}' is not a QEMU id (a letter, then letters, digits, _ . -)`, HINT);
  const br = seen.get('br');
  const args: HelperArgs = { useVnet: true, bridge: br ? checkInterfaceName(br, 'bridge') : 'br0', fd: -1, help: false };
  if (br) args.bridgeGiven = true;
  const mode = seen.get('mode');
  if (mode !== undefined) args.mode = mode;
  const dev = seen.get('dev');
  if (dev !== undefined) args.dev = checkInterfaceName(dev, 'device');
  let mac: string | undefined;
  const macText = seen.get('mac');
  if (macText !== undefined) {
    mac = formatMac(parseGuestMac(macText));
    args.mac = mac;
  }
  const mtu = num('mtu', 68, 65535);
  if (mtu !== undefined) args.mtu = mtu;
  const queues = num('queues', 1, 16);
  if (queues !== undefined) args.queues = queues;
  const profile = seen.get('profile');
  if (profile !== undefined) args.profile = profile;
  const config = seen.get('config');
  if (config !== undefined) args.config = config;
  const pool = seen.get('vf-pool');
  if (pool !== undefined) args.vfPool = pool.split('+').filter(Boolean);
  return { id, args, vhost: vhost as VhostWish, ...(mac ? { mac } : {}), text, warnings };
}

/** Every NIC's id must be unique: QEMU would refuse the second -netdev. */
export function parseNicSpecs(texts: readonly string[]): NicSpec[] {
  const specs = texts.map((t, i) => parseNicSpec(t, i));
  const ids = new Set<string>();
  for (const s of specs) {
    if (ids.has(s.id)) throw new UsageError(`--nic '${s.text}': id '${s.id}' is used by another --nic`, 'give each NIC its own id=');
    ids.add(s.id);
  }
  return specs;
}
