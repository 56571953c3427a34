// The network configuration of `"type": "qemu-net-helper"`, validated with
// zod: the helper's own words (mode, dev, mac, mtu, vlan, vfPool) plus a
// transport, and the spec's well-known keys. An unknown key is the spec's
// code 2 (unsupported field), any other problem code 7, each naming the field.
import { z } from 'zod';
import { CniCode, CniError } from './errors.js';

const MODES = ['bridge', 'veb', 'vepa', 'private', 'passthrough', 'nat', 'route'] as const;
const TRANSPORTS = ['veth', 'tap', 'macvtap', 'vhost-user', 'vf'] as const;
export type CniMode = (typeof MODES)[number];

const ifname = z.string().min(1).max(15).regex(/^[^\s/:]+$/, 'an interface name (1-15 characters, no space, / or :)');
const mac = z.string().regex(/^([0-9a-fA-F]{2}:){5}[0-9a-fA-F]{2}$/, 'a MAC address like 52:54:00:12:34:56');

const Attachment = z.object({ containerID: z.string().min(1), ifname: z.string().min(1) }).passthrough();

export const NetConfSchema = z.object({
  cniVersion: z.string().regex(/^\d+\.\d+\.\d+$/, 'a version like 1.1.0'),
  name: z.string().regex(/^[A-Za-z0-9][A-Za-z0-9_.-]*$/, 'a network name (alphanumerics, _ . -)'),
  type: z.literal('qemu-net-helper'),
  /** Default: passthrough for transport vf, bridge otherwise. */
  mode: z.enum(MODES).optional(),
  transport: z.enum(TRANSPORTS).default('veth'),
  dev: ifname.optional(),
  mac: mac.optional(),
  mtu: z.number().int().min(68).max(65535).optional(),
  vlan: z.number().int().min(0).max(4094).optional(),
  vfPool: z.array(z.string().min(1)).min(1).optional(),
  /** Mode nat: the NAT network's IPv4 subnet (as the helper's profile word); else IPAM's, else the helper's choice. */
  subnet: z.string().regex(/^\d{1,3}(\.\d{1,3}){3}\/\d{1,2}$/, 'an IPv4 subnet like 10.213.7.0/24').optional(),
  /** tap transport: owner and group of the tap; vhost-user: of the switch port. So an unprivileged QEMU in the pod may use it. */
  owner: z.number().int().min(0).max(0xfffffffe).optional(),
  group: z.number().int().min(0).max(0xfffffffe).optional(),
  /**
   * Accepted only when it names the state directory in force (host-paths.ts):
   * a network configuration does not choose where root writes.
   */
  stateDir: z.string().regex(/^\/[^\0]*$/, 'an absolute path').optional(),
  /** Likewise for the switch's control socket: accepted only when it names the one in force. */
  switchControl: z.string().regex(/^\/[^\0]*$/, 'an absolute path').optional(),
  ipam: z.object({ type: z.string().regex(/^[A-Za-z0-9][A-Za-z0-9_.-]*$/, 'a plugin file name') }).passthrough().optional(),
  dns: z.object({
    nameservers: z.array(z.string()).optional(),
    domain: z.string().optional(),
    search: z.array(z.string()).optional(),
    options: z.array(z.string()).optional(),
  }).strict().optional(),
  args: z.record(z.string(), z.unknown()).optional(),
  capabilities: z.record(z.string(), z.boolean()).optional(),
  runtimeConfig: z.object({ mac: mac.optional() }).passthrough().optional(),
  prevResult: z.record(z.string(), z.unknown()).optional(),
  ipMasq: z.literal(false).optional(),
  'cni.dev/valid-attachments': z.array(Attachment).optional(),
}).strict().transform((c) => ({ ...c, mode: c.mode ?? (c.transport === 'vf' ? 'passthrough' : 'bridge') as CniMode })).superRefine((c, ctx) => {
  const bad = (path: string, message: string): void => { ctx.addIssue({ code: 'custom', path: [path], message }); };
  const macvlanModes = ['veb', 'vepa', 'private', 'passthrough', 'bridge'];
  switch (c.transport) {
    case 'veth':
      // nat: dev names the NAT bridge (made by us; default qnhnat0), as for the helper.
      if (c.mode !== 'nat' && !c.dev) bad('dev', `mode '${c.mode}' with transport 'veth' needs dev (the bridge, the macvlan parent, or the uplink to route through)`);
      break;
    case 'macvtap':
      if (!c.dev) bad('dev', "transport 'macvtap' needs dev (the parent device)");
      if (!macvlanModes.includes(c.mode)) bad('mode', `transport 'macvtap' does the modes ${macvlanModes.join(', ')}, not '${c.mode}'`);
      break;
    case 'tap':
      if (c.mode !== 'bridge' && c.mode !== 'nat') bad('mode', `transport 'tap' is offered in modes 'bridge' and 'nat' only (got '${c.mode}')`);
      // The guest takes its address by DHCP: it must be reserved for the guest's MAC.
      if (c.mode === 'nat' && !c.mac && !c.runtimeConfig?.mac) bad('mac', "transport 'tap' in mode 'nat' needs mac: the guest's MAC, for which the address is reserved in the NAT network's DHCP");
      break;
    case 'vf':
      if (!c.vfPool && !c.dev) bad('vfPool', "transport 'vf' needs vfPool (PF names or VF PCI addresses) or dev (the PF)");
      if (c.mode !== 'passthrough') bad('mode', `transport 'vf' is mode 'passthrough' (got '${c.mode}')`);
      break;
    case 'vhost-user':
      if (!['bridge', 'veb', 'vepa', 'private'].includes(c.mode)) bad('mode', `transport 'vhost-user' (a switch port) does the modes bridge, veb, vepa and private, not '${c.mode}'`);
      if (c.dev) bad('dev', "transport 'vhost-user' takes no dev: the port is on the switch behind switchControl");
      break;
  }
  if (c.subnet !== undefined && c.mode !== 'nat') bad('subnet', "subnet is the NAT network's: only mode 'nat' takes it");
  if (c.vlan !== undefined && c.transport !== 'vf') bad('vlan', "vlan is set on the VF by its PF; only transport 'vf' takes it");
  if ((c.owner !== undefined || c.group !== undefined) && c.transport !== 'tap' && c.transport !== 'vhost-user') bad(c.owner !== undefined ? 'owner' : 'group', "owner/group apply to transports 'tap' and 'vhost-user' only");
});

export type NetConf = z.infer<typeof NetConfSchema>;

function fieldOf(path: readonly PropertyKey[]): string {
  return path.length ? path.map(String).join('.') : '(top level)';
}

/** Parses stdin into a checked config; every command (DEL and GC too) needs a valid one. */
export function parseConfig(text: string): NetConf {
  let raw: unknown;
  try {
    raw = JSON.parse(text);
  } catch (e) {
    throw new CniError(CniCode.DECODE_FAILURE, 'network configuration on stdin is not JSON', (e as Error).message);
  }
  if (typeof raw !== 'object' || raw === null || Array.isArray(raw)) throw new CniError(CniCode.DECODE_FAILURE, 'network configuration on stdin is not a JSON object');
  const r = NetConfSchema.safeParse(raw);
  if (r.success) return r.data;
  const unknown = r.error.issues.find((i) => i.code === 'unrecognized_keys');
  if (unknown) {
    const keys = (unknown as { keys: string[] }).keys;
    throw new CniError(CniCode.UNSUPPORTED_FIELD, `unsupported field '${keys.join("', '")}' in network configuration`,
      "fields of type 'qemu-net-helper': mode, transport, dev, mac, mtu, vlan, vfPool, subnet, owner, group, stateDir, switchControl, ipam, dns, args");
  }
  const first = r.error.issues[0]!;
  const field = fieldOf(first.path);
  throw new CniError(CniCode.INVALID_CONFIG, `invalid network configuration: field '${field}': ${first.message}`,
    r.error.issues.length > 1 ? r.error.issues.slice(1).map((i) => `field '${fieldOf(i.path)}': ${i.message}`).join('; ') : undefined);
}

/** cniVersion only (VERSION reads nothing else; a broken rest must not stop it). */
export function peekVersion(text: string): string | undefined {
  try {
    const v = (JSON.parse(text) as { cniVersion?: unknown }).cniVersion;
    return typeof v === 'string' ? v : undefined;
  } catch {
    return undefined;
  }
}
