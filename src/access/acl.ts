// Access control in qemu-bridge-helper's bridge.conf syntax, so an existing
// /etc/qemu/bridge.conf can be reused unchanged (via `include`), extended with
// resource kinds and per-user/per-group rules:
//   allow NAME|all [user=U,..] [group=G,..]         an interface (bridge or --dev)
//   allow KIND:NAME|KIND:all [user=..] [group=..]    KIND: bridge mode dev vf profile subnet
//   deny ...   include PATH   # comment
// A request is allowed when, for every resource it names, some allow rule that
// applies to the caller matches and no deny rule does: deny wins, default deny.
// Unlike qemu-bridge-helper we report the file and line of every parse error
// and of the rule that decided, and we refuse include loops.
import { existsSync, readFileSync } from 'node:fs';
import { dirname, resolve } from 'node:path';
import { AccessDeniedError, ConfigError } from '../errors.js';
import { interfaceNameProblem } from '../net/ifname.js';
import { cidrOrNull, within } from '../net/ipv4.js';
import type { Caller } from './caller.js';

const MAX_INCLUDE_DEPTH = 16;

/** What a request can name. `iface` is a bare name: it matches a bridge and a --dev alike. */
const RESOURCE_KINDS = ['bridge', 'mode', 'dev', 'vf', 'profile', 'subnet'] as const;
export type ResourceKind = (typeof RESOURCE_KINDS)[number];
export type RuleKind = ResourceKind | 'iface';

export interface Resource {
  kind: ResourceKind;
  name: string;
}

export interface AclRule {
  action: 'allow' | 'deny';
  kind: RuleKind;
  /** The name, or null for `all`. */
  name: string | null;
  /** Users (names or uids) and groups (names or gids) the rule is for; both empty: everyone. */
  users: string[];
  groups: string[];
  file: string;
  line: number;
}

export type FileReader = (path: string) => string;

const SYNTAX_HINT = "lines are 'allow|deny NAME|all|KIND:NAME|KIND:all [user=U,..] [group=G,..]' or 'include PATH'";
const MODES = ['veb', 'vepa', 'private', 'bridge', 'nat', 'route', 'passthrough'];

function nameProblem(kind: RuleKind, name: string): string | null {
  switch (kind) {
    case 'iface': case 'bridge': case 'dev': {
      const p = interfaceNameProblem(name);
      return p ? `interface name '${name}' ${p}` : null;
    }
    case 'mode': return MODES.includes(name) ? null : `'${name}' is not a mode (${MODES.join(', ')})`;
    case 'subnet': return cidrOrNull(name) ? null : `'${name}' is not an IPv4 prefix like 10.213.0.0/16`;
    case 'vf': return /^[A-Za-z0-9_.:-]{1,32}$/.test(name) ? null : `'${name}' is not a PF name or PCI address`;
    case 'profile': return /^[A-Za-z0-9_.-]{1,64}$/.test(name) && !name.startsWith('.') ? null : `'${name}' is not a profile name`;
  }
}

function parseRule(action: 'allow' | 'deny', words: string[], where: string): Omit<AclRule, 'file' | 'line'> {
  const [target, ...quals] = words as [string, ...string[]];
  const m = /^([a-z]+):(.+)$/.exec(target);
  let kind: RuleKind = 'iface';
  let nameText = target;
  if (m) {
    if (!(RESOURCE_KINDS as readonly string[]).includes(m[1]!)) throw new ConfigError(`ACL file ${where}: unknown resource kind '${m[1]}'`, `kinds are ${RESOURCE_KINDS.join(', ')}`);
    kind = m[1] as ResourceKind;
    nameText = m[2]!;
  }
  const name = nameText === 'all' ? null : nameText;
  if (name !== null) {
    const p = nameProblem(kind, name);
    if (p) throw new ConfigError(`ACL file ${where}: ${kind === 'iface' ? p.replace(/^interface name/, 'bridge name') : p}`);
  }
  const users: string[] = [];
  const groups: string[] = [];
  for (const q of quals) {
    const qm = /^(user|group)=([A-Za-z0-9_.][A-Za-z0-9_.@$-]*(?:,[A-Za-z0-9_.][A-Za-z0-9_.@$-]*)*)$/.exec(q);
    if (!qm) throw new ConfigError(`ACL file ${where}: '${q}' is not user=NAME[,NAME..] or group=NAME[,NAME..]`, SYNTAX_HINT);
    (qm[1] === 'user' ? users : groups).push(...qm[2]!.split(','));
  }
  return { action, kind, name, users, groups };
}

/** QEMU's own ACL (qemu-bridge-helper's): an admin who has one can include it. */
const QEMU_BRIDGE_CONF = '/etc/qemu/bridge.conf';

/** How to create a missing ACL (the first-run message); suggests including QEMU's when it exists. */
export function createAclHint(path: string, qemuConf = QEMU_BRIDGE_CONF): string {
  const reuse = existsSync(qemuConf) ? `, or reuse QEMU's: echo 'include ${qemuConf}' > ${path}` : '';
  return `create it: echo 'allow br0' > ${path} (one 'allow BRIDGE' per line)${reuse}`;
}

export function parseAcl(path: string, read: FileReader = (p) => readFileSync(p, 'utf8'), depth = 0, stack: string[] = []): AclRule[] {
  if (depth > MAX_INCLUDE_DEPTH || stack.includes(path)) {
    throw new ConfigError(`ACL file ${stack[stack.length - 1] ?? path}: include loop through ${path}`, 'remove the circular include');
  }
  let text: string;
  try {
    text = read(path);
  } catch (e) {
    const code = (e as NodeJS.ErrnoException).code;
    const from = stack.length ? ` (included from ${stack[stack.length - 1]})` : '';
    if (code === 'ENOENT') throw new ConfigError(`ACL file ${path}${from} does not exist`, from ? 'create it or drop the include' : createAclHint(path));
    if (code === 'EACCES') throw new ConfigError(`ACL file ${path}${from} is not readable`, 'check its permissions');
    throw new ConfigError(`ACL file ${path}${from} cannot be read: ${code ?? String(e)}`);
  }
  const rules: AclRule[] = [];
  const lines = text.split('\n');
  for (let i = 0; i < lines.length; i++) {
    const line = lines[i]!.trim();
    if (line === '' || line.startsWith('#')) continue;
    const words = line.split(/\s+/);
    const where = `${path}:${i + 1}`;
    const cmd = words[0]!;
    if (words.length < 2) throw new ConfigError(`ACL file ${where}: '${line}' has no argument`, SYNTAX_HINT);
    if (cmd === 'allow' || cmd === 'deny') {
      rules.push({ ...parseRule(cmd, words.slice(1), where), file: path, line: i + 1 });
    } else if (cmd === 'include') {
      const target = resolve(dirname(path), line.slice('include'.length).trim());
      rules.push(...parseAcl(target, read, depth + 1, [...stack, path]));
    } else {
      throw new ConfigError(`ACL file ${where}: unknown command '${cmd}'`, SYNTAX_HINT);
    }
  }
  return rules;
}

/** Whether subnet `inner` lies in `outer` (both a.b.c.d/p; anything else matches nothing). */
function subnetWithin(inner: string, outer: string): boolean {
  const a = cidrOrNull(inner);
  const b = cidrOrNull(outer);
  return a !== null && b !== null && within(a, b);
}

function matchesResource(r: AclRule, res: Resource): boolean {
  if (r.kind === 'iface' ? res.kind !== 'bridge' && res.kind !== 'dev' : r.kind !== res.kind) return false;
  if (r.name === null) return true;
  return res.kind === 'subnet' ? subnetWithin(res.name, r.name) : r.name === res.name;
}

function appliesTo(r: AclRule, caller: Caller): boolean {
  if (r.users.length === 0 && r.groups.length === 0) return true;
  return r.users.some((u) => caller.isUser(u)) || r.groups.some((g) => caller.inGroup(g));
}

export interface AclDecision {
  allowed: boolean;
  /** The rule that decided: the first matching deny, else the first matching allow. */
  rule: AclRule | null;
}

export function decide(rules: readonly AclRule[], res: Resource, caller: Caller): AclDecision {
  let allow: AclRule | null = null;
  for (const r of rules) {
    if (!matchesResource(r, res) || !appliesTo(r, caller)) continue;
    if (r.action === 'deny') return { allowed: false, rule: r };
    allow ??= r;
  }
  return { allowed: allow !== null, rule: allow };
}

function ruleText(r: AclRule): string {
  const target = r.kind === 'iface' ? r.name ?? 'all' : `${r.kind}:${r.name ?? 'all'}`;
  const q = [...(r.users.length ? [`user=${r.users.join(',')}`] : []), ...(r.groups.length ? [`group=${r.groups.join(',')}`] : [])];
  return [r.action, target, ...q].join(' ');
}

function allowLine(res: Resource): string {
  return res.kind === 'bridge' ? `allow ${res.name}` : `allow ${res.kind}:${res.name}`;
}

/** Throws AccessDeniedError naming the resource, the file and the deciding rule, for the first resource refused. */
export function authorize(path: string, rules: readonly AclRule[], caller: Caller, resources: readonly Resource[]): void {
  for (const res of resources) {
    const d = decide(rules, res, caller);
    if (d.allowed) continue;
    const what = `${res.kind} '${res.name}'`;
    const who = caller.uid === 0 ? '' : ` for ${caller.describe()}`;
    if (d.rule) {
      throw new AccessDeniedError(`access denied: ${what} is refused by rule '${ruleText(d.rule)}' at ${d.rule.file}:${d.rule.line}${who}`, 'deny rules win over allow rules; remove that rule to allow it');
    }
    throw new AccessDeniedError(`access denied: ${what} is not allowed by ${path}${who} (no '${allowLine(res)}' or '${res.kind === 'bridge' ? 'allow all' : `allow ${res.kind}:all`}' rule; the default is deny)`, `add '${allowLine(res)}' to ${path}`);
  }
}

/** The bridge check of the plain helper: parse, then authorize one bridge. */
export function checkAccess(path: string, bridge: string, caller: Caller, read?: FileReader): void {
  authorize(path, parseAcl(path, read), caller, [{ kind: 'bridge', name: bridge }]);
}
