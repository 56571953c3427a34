// Access control in qemu-bridge-helper's bridge.conf syntax, so an existing
// /etc/qemu/bridge.conf can be reused unchanged (via `include`):
//   allow NAME | allow all | deny NAME | deny all | include PATH | # comment
// Access needs an allow match and no deny match: deny wins, default deny.
// Unlike qemu-bridge-helper we report the file and line of every parse error
// and of the rule that decided, and we refuse include loops.
import { readFileSync } from 'node:fs';
import { dirname, resolve } from 'node:path';
import { AccessDeniedError, ConfigError } from '../errors.js';
import { interfaceNameProblem } from '../net/ifname.js';

export const DEFAULT_ACL_PATH = '/etc/qemu-net-helper/bridge.conf';
export const ACL_ENV = 'QEMU_NET_HELPER_ACL';
const MAX_INCLUDE_DEPTH = 16;

export interface AclRule {
  action: 'allow' | 'deny';
  /** Bridge name, or null for `all`. */
  name: string | null;
  file: string;
  line: number;
}

export type FileReader = (path: string) => string;

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
    if (code === 'ENOENT') throw new ConfigError(`ACL file ${path}${from} does not exist`, `create it with a line 'allow BRIDGE', or point --acl or ${ACL_ENV} at one`);
    if (code === 'EACCES') throw new ConfigError(`ACL file ${path}${from} is not readable`, 'check its permissions');
    throw new ConfigError(`ACL file ${path}${from} cannot be read: ${code ?? String(e)}`);
  }
  const rules: AclRule[] = [];
  const lines = text.split('\n');
  for (let i = 0; i < lines.length; i++) {
    const line = lines[i]!.trim();
    if (line === '' || line.startsWith('#')) continue;
    const m = /^(\S+)\s+(.+)$/.exec(line);
    const where = `${path}:${i + 1}`;
    if (!m) throw new ConfigError(`ACL file ${where}: '${line}' has no argument`, "lines are 'allow NAME|all', 'deny NAME|all' or 'include PATH'");
    const [, cmd, arg] = m as unknown as [string, string, string];
    if (cmd === 'allow' || cmd === 'deny') {
      if (arg !== 'all') {
        const p = interfaceNameProblem(arg);
        if (p) throw new ConfigError(`ACL file ${where}: bridge name '${arg}' ${p}`);
      }
      rules.push({ action: cmd, name: arg === 'all' ? null : arg, file: path, line: i + 1 });
    } else if (cmd === 'include') {
      const target = resolve(dirname(path), arg);
      rules.push(...parseAcl(target, read, depth + 1, [...stack, path]));
    } else {
      throw new ConfigError(`ACL file ${where}: unknown command '${cmd}'`, "lines are 'allow NAME|all', 'deny NAME|all' or 'include PATH'");
    }
  }
  return rules;
}

export interface AclDecision {
  allowed: boolean;
  /** The rule that decided: the first matching deny, else the first matching allow. */
  rule: AclRule | null;
}

export function decide(rules: readonly AclRule[], bridge: string): AclDecision {
  let allow: AclRule | null = null;
  for (const r of rules) {
    if (r.name !== null && r.name !== bridge) continue;
    if (r.action === 'deny') return { allowed: false, rule: r };
    allow ??= r;
  }
  return { allowed: allow !== null, rule: allow };
}

export function aclPath(flag: string | undefined, env: NodeJS.ProcessEnv = process.env): string {
  return flag ?? (env[ACL_ENV] || DEFAULT_ACL_PATH);
}

/** Throws AccessDeniedError naming the bridge, the file and the deciding rule. */
export function checkAccess(path: string, bridge: string, read?: FileReader): AclRule {
  const d = decide(parseAcl(path, read), bridge);
  if (d.allowed) return d.rule!;
  if (d.rule) {
    const text = `deny ${d.rule.name ?? 'all'}`;
    throw new AccessDeniedError(`access denied: bridge '${bridge}' is refused by rule '${text}' at ${d.rule.file}:${d.rule.line}`, 'deny rules win over allow rules; remove that rule to allow it');
  }
  throw new AccessDeniedError(`access denied: bridge '${bridge}' is not allowed by ${path} (no 'allow ${bridge}' or 'allow all' rule; the default is deny)`, `add 'allow ${bridge}' to ${path}`);
}
