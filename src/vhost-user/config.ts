// The switch's configuration file (`vhost-user serve --config FILE`, default
// /etc/qemu-net-helper/switch.json when it exists): what `serve`'s flags say,
// as JSON checked by zod, so a switch under systemd comes back as configured.
// Flags given beside the file win over it (--socket adds ports). The `save`
// control op writes the running switch back: its ports now, the rest as in
// effect.
import { readFileSync } from 'node:fs';
import { z } from 'zod';
import { ConfigError, SetupError, UsageError } from '../errors.js';
import { writeFileAtomic } from '../state/atomic-file.js';
import type { PollMode } from './dataplane/client.js';
import type { PortModeName } from './switch/forwarding.js';

/** How `--uplink` frames leave (uplink.ts): AF_XDP where it opens, AF_XDP or fail, the packet TX ring. */
export const UPLINK_TX = ['auto', 'xdp', 'packet'] as const;
export type UplinkTx = (typeof UPLINK_TX)[number];

export const DEFAULT_SWITCH_CONFIG = '/etc/qemu-net-helper/switch.json';

const socketPath = z.string()
  .refine((s) => s.startsWith('/'), 'an absolute path')
  .refine((s) => !s.includes('\0') && Buffer.byteLength(s) <= 107, 'a unix socket path of at most 107 bytes');
const ifname = z.string().min(1).max(15).regex(/^[^\s/:]+$/, 'an interface name (1-15 characters, no space, / or :)');
const mode = z.enum(['veb', 'vepa', 'private']);

const id = z.number().int().min(0).max(2 ** 32 - 2);
const PortSchema = z.object({
  socket: socketPath, mode: mode.optional(), client: z.boolean().optional(),
  /** Whose port it is (default: socketOwner, else the switch's own user). */
  owner: z.object({ uid: id, gid: id }).strict().optional(),
}).strict();

const SwitchConfigSchema = z.object({
  /** The control socket. */
  control: socketPath.optional(),
  /** Default port mode. */
  mode: mode.optional(),
  uplink: z.union([z.object({ device: ifname }).strict(), z.object({ bridge: ifname }).strict()]).optional(),
  ports: z.array(PortSchema).max(1024).optional(),
  socketMode: z.string().regex(/^0?[0-7]{3}$/, 'an octal mode like "0660"').optional(),
  socketGroup: z.union([z.string().min(1), z.number().int().min(0)]).optional(),
  queues: z.number().int().min(1).max(8).optional(),
  poll: z.enum(['event', 'busy']).optional(),
  allowUnsealedMemory: z.boolean().optional(),
  metrics: z.string().min(1).optional(),
  statsInterval: z.number().int().min(0).optional(),
  /** Tenancy and limits: as the flags --control-group, --socket-owner, --max-ports-per-user, --max-guest-memory, --max-mem-regions. */
  controlGroup: z.union([z.string().min(1), z.number().int().min(0)]).optional(),
  socketOwner: z.string().min(1).optional(),
  maxPortsPerUser: z.number().int().min(1).max(4096).optional(),
  maxGuestMemory: z.string().regex(/^\d+[KMGT]?$/i, 'a size like "64G"').optional(),
  maxMemRegions: z.number().int().min(1).optional(),
  offloads: z.boolean().optional(),
  /** How frames leave an `uplink` device: as the flag --uplink-tx. */
  uplinkTx: z.enum(UPLINK_TX).optional(),
}).strict();

export type SwitchConfig = z.infer<typeof SwitchConfigSchema>;
export type PortConfig = z.infer<typeof PortSchema>;

/** The settings a switch runs with: file and flags merged, defaults filled in. */
export interface SwitchSettings {
  control?: string;
  mode: PortModeName;
  uplink?: { device: string } | { bridge: string };
  ports: PortConfig[];
  socketMode?: string;
  socketGroup?: string | number;
  queues: number;
  poll: PollMode;
  allowUnsealedMemory: boolean;
  metrics?: string;
  statsInterval: number;
  controlGroup?: string | number;
  socketOwner?: string;
  maxPortsPerUser?: number;
  maxGuestMemory?: string;
  maxMemRegions?: number;
  offloads: boolean;
  uplinkTx: UplinkTx;
}

/** The flags of `serve` that a file may also set (undefined: not given). */
export interface ServeFlags {
  socket: string[];
  client: boolean;
  br?: string;
  uplink?: string;
  mode?: string;
  control?: string;
  'socket-mode'?: string;
  'socket-group'?: string;
  queues?: number;
  poll?: string;
  'allow-unsealed-memory': boolean;
  metrics?: string;
  'stats-interval'?: number;
  'control-group'?: string;
  'socket-owner'?: string;
  'max-ports-per-user'?: number;
  'max-guest-memory'?: string;
  'max-mem-regions'?: number;
  offloads?: string;
  'uplink-tx'?: string;
}

export function parseSwitchConfig(text: string, file: string): SwitchConfig {
  let v: unknown;
  try {
    v = JSON.parse(text);
  } catch (e) {
    throw new ConfigError(`${file} is not valid JSON: ${(e as Error).message}`, 'fix the file');
  }
  const r = SwitchConfigSchema.safeParse(v);
  if (!r.success) {
    const what = r.error.issues.map((i) => `${i.path.length ? i.path.join('.') : '(top level)'}: ${i.message}`).join('; ');
    throw new ConfigError(`invalid switch configuration ${file}: ${what}`, 'fix the file (README: "Configuration file")');
  }
  const seen = new Set<string>();
  for (const p of r.data.ports ?? []) {
    if (seen.has(p.socket)) throw new ConfigError(`invalid switch configuration ${file}: port socket ${p.socket} is listed twice`, 'each port needs its own socket path');
    seen.add(p.socket);
  }
  return r.data;
}

/** The file, or null when `optional` and it does not exist (the default path). */
export function loadSwitchConfig(file: string, optional: boolean): SwitchConfig | null {
  let text: string;
  try {
    text = readFileSync(file, 'utf8');
  } catch (e) {
    const code = (e as NodeJS.ErrnoException).code;
    if (optional && code === 'ENOENT') return null;
    throw new ConfigError(`cannot read the switch configuration ${file}: ${code ?? String(e)}`, 'pass an existing --config FILE, or --config none');
  }
  return parseSwitchConfig(text, file);
}

/** File settings, then flags over them; --socket ports come after the file's. */
export function mergeSettings(file: SwitchConfig | null, f: ServeFlags): SwitchSettings {
  const hint = "run 'qemu-net-helper vhost-user serve --help'";
  if (f.br && f.uplink) throw new UsageError('--uplink and --br are exclusive: --br BR is itself an uplink (a tap on bridge BR)', hint);
  const ports: PortConfig[] = [...(file?.ports ?? [])];
  for (const s of f.socket) {
    if (ports.some((p) => p.socket === s)) throw new UsageError(`--socket ${s} is given twice (or is already a port of the configuration file)`, hint);
    ports.push({ socket: s, ...(f.client ? { client: true } : {}) });
  }
  const uplink = f.uplink ? { device: f.uplink } : f.br ? { bridge: f.br } : file?.uplink;
  const control = f.control ?? file?.control;
  const socketMode = f['socket-mode'] ?? file?.socketMode;
  const socketGroup = f['socket-group'] ?? file?.socketGroup;
  const metrics = f.metrics ?? file?.metrics;
  const controlGroup = f['control-group'] ?? file?.controlGroup;
  const socketOwner = f['socket-owner'] ?? file?.socketOwner;
  const maxPortsPerUser = f['max-ports-per-user'] ?? file?.maxPortsPerUser;
  const maxGuestMemory = f['max-guest-memory'] ?? file?.maxGuestMemory;
  const maxMemRegions = f['max-mem-regions'] ?? file?.maxMemRegions;
  return {
    ...(control ? { control } : {}),
    mode: (f.mode ?? file?.mode ?? 'veb') as PortModeName,
    ...(uplink ? { uplink } : {}),
    ports,
    ...(socketMode ? { socketMode } : {}),
    ...(socketGroup !== undefined ? { socketGroup } : {}),
    queues: f.queues ?? file?.queues ?? 1,
    poll: (f.poll ?? file?.poll ?? 'event') as PollMode,
    allowUnsealedMemory: f['allow-unsealed-memory'] || (file?.allowUnsealedMemory ?? false),
    ...(metrics ? { metrics } : {}),
    statsInterval: f['stats-interval'] ?? file?.statsInterval ?? 0,
    ...(controlGroup !== undefined ? { controlGroup } : {}),
    ...(socketOwner ? { socketOwner } : {}),
    ...(maxPortsPerUser !== undefined ? { maxPortsPerUser } : {}),
    ...(maxGuestMemory ? { maxGuestMemory } : {}),
    ...(maxMemRegions !== undefined ? { maxMemRegions } : {}),
    offloads: f.offloads ? f.offloads === 'on' : file?.offloads ?? true,
    uplinkTx: (f['uplink-tx'] ?? file?.uplinkTx ?? 'auto') as UplinkTx,
  };
}

type Owner = { uid: number; gid: number };

/**
 * The running switch as a file: its ports now (socket, mode, client, and the
 * owner where it is not `defaultOwner`, what a port without one gets), the
 * other settings as in effect.
 */
export function settingsToFile(s: SwitchSettings, ports: { socket: string; mode: PortModeName; client: boolean; owner?: Owner }[], defaultOwner?: Owner): SwitchConfig {
  const own = (o?: Owner): object => (o && !(defaultOwner && o.uid === defaultOwner.uid && o.gid === defaultOwner.gid) ? { owner: { uid: o.uid, gid: o.gid } } : {});
  return {
    ...(s.control ? { control: s.control } : {}),
    mode: s.mode,
    ...(s.uplink ? { uplink: s.uplink } : {}),
    ports: ports.map((p) => ({ socket: p.socket, ...(p.mode !== s.mode ? { mode: p.mode } : {}), ...(p.client ? { client: true } : {}), ...own(p.owner) })),
    ...(s.socketMode ? { socketMode: s.socketMode } : {}),
    ...(s.socketGroup !== undefined ? { socketGroup: s.socketGroup } : {}),
    queues: s.queues,
    poll: s.poll,
    ...(s.allowUnsealedMemory ? { allowUnsealedMemory: true } : {}),
    ...(s.metrics ? { metrics: s.metrics } : {}),
    ...(s.statsInterval ? { statsInterval: s.statsInterval } : {}),
    ...(s.controlGroup !== undefined ? { controlGroup: s.controlGroup } : {}),
    ...(s.socketOwner ? { socketOwner: s.socketOwner } : {}),
    ...(s.maxPortsPerUser !== undefined ? { maxPortsPerUser: s.maxPortsPerUser } : {}),
    ...(s.maxGuestMemory ? { maxGuestMemory: s.maxGuestMemory } : {}),
    ...(s.maxMemRegions !== undefined ? { maxMemRegions: s.maxMemRegions } : {}),
    ...(s.offloads ? {} : { offloads: false }),
    ...(s.uplinkTx !== 'auto' ? { uplinkTx: s.uplinkTx } : {}),
  };
}

/** Writes the file atomically (readable by all: it holds paths and modes, no secrets). */
export function saveSwitchConfig(file: string, cfg: SwitchConfig): void {
  try {
    writeFileAtomic(file, `${JSON.stringify(cfg, null, 2)}\n`, 0o644);
  } catch (e) {
    throw new SetupError(`cannot write the switch configuration ${file}: ${(e as NodeJS.ErrnoException).code ?? (e as Error).message}`);
  }
}
