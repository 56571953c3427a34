// Policies and profiles are data; these zod schemas are their contract. zod
// costs ~25 ms to load, so only the policy path loads it: the plain
// bridge helper (QEMU's default use) never does.
import { z } from 'zod';
import { MODES } from '../backends/types.js';

const ifname = z.string().min(1).max(15).regex(/^[^\s/:]+$/, 'an interface name (1-15 characters, no space, / or :)');
const mac = z.string().regex(/^([0-9a-fA-F]{2}:){5}[0-9a-fA-F]{2}$/, 'a MAC address like 52:54:00:12:34:56');
const cidr = z.string().regex(/^\d{1,3}(\.\d{1,3}){3}\/\d{1,2}$/, 'an IPv4 prefix like 10.213.0.0/24');
const ipv4 = z.string().regex(/^\d{1,3}(\.\d{1,3}){3}$/, 'an IPv4 address');

const TRANSPORTS = ['tap', 'macvtap', 'socket', 'vhost-kernel', 'vhost-user'] as const;
// ethernet: any existing non-bridge device (an SR-IOV PF too); plain: ethernet but not a PF.
const DEV_KINDS = ['bridge', 'ethernet', 'plain', 'sriov-pf', 'absent', 'any'] as const;

export const CandidateSchema = z.object({
  kernel: z.string().min(1),
  transport: z.enum(TRANSPORTS),
  /** Only consider this candidate when --dev is of this kind. */
  when: z.object({ devKind: z.enum(DEV_KINDS) }).strict().optional(),
  params: z.record(z.string(), z.unknown()).optional(),
  note: z.string().optional(),
}).strict();

export const ModePolicySchema = z.object({
  description: z.string().optional(),
  candidates: z.array(CandidateSchema).min(1),
}).strict();

export const PolicyFileSchema = z.object({
  version: z.literal(1),
  modes: z.partialRecord(z.enum(MODES as unknown as [string, ...string[]]), ModePolicySchema),
}).strict();

export const ProfileSchema = z.object({
  version: z.literal(1).optional(),
  description: z.string().optional(),
  mode: z.enum(MODES as unknown as [string, ...string[]]).optional(),
  dev: ifname.optional(),
  mac: mac.optional(),
  mtu: z.number().int().min(68).max(65535).optional(),
  queues: z.number().int().min(1).max(16).optional(),
  vfPool: z.array(z.string().min(1)).optional(),
  vlan: z.number().int().min(0).max(4094).optional(),
  spoofchk: z.boolean().optional(),
  subnet: cidr.optional(),
  guestIp: ipv4.optional(),
  /** Transports this profile allows, best first. */
  protocols: z.array(z.enum(TRANSPORTS)).optional(),
}).strict();

export type Candidate = z.infer<typeof CandidateSchema>;
export type ModePolicy = z.infer<typeof ModePolicySchema>;
export type Profile = z.infer<typeof ProfileSchema>;

/** One line per problem: file, field path, what was expected. */
export function formatIssues(file: string, err: z.ZodError): string {
  return err.issues.map((i) => `${file}: ${i.path.length ? i.path.join('.') : '(top level)'}: ${i.message}`).join('; ');
}
