// Built-in policies (policies/*.json in the package) merged with the user's
// (<config>/policies/*.json, a mode there replaces the built-in one) and
// profiles (<config>/profiles/<name>.json). Every file is validated; an
// invalid one is an error naming the file and the field, never skipped.
import { existsSync, readdirSync, readFileSync } from 'node:fs';
import { join } from 'node:path';
import { projectRoot } from '../paths.js';
import { ConfigError, UsageError } from '../errors.js';
import type { ParsedMode } from './mode.js';
import { formatIssues, PolicyFileSchema, ProfileSchema, type ModePolicy, type Profile } from './schema.js';

function builtinPolicyDir(): string {
  return join(projectRoot(), 'policies');
}

function readJson(file: string): unknown {
  let text: string;
  try {
    text = readFileSync(file, 'utf8');
  } catch (e) {
    throw new ConfigError(`cannot read ${file}: ${(e as NodeJS.ErrnoException).code ?? String(e)}`);
  }
  try {
    return JSON.parse(text);
  } catch (e) {
    throw new ConfigError(`${file} is not valid JSON: ${(e as Error).message}`);
  }
}

export interface LoadedPolicy extends ModePolicy { source: string }

function loadDir(dir: string, into: Map<string, LoadedPolicy>): void {
  if (!existsSync(dir)) return;
  for (const f of readdirSync(dir).filter((n) => n.endsWith('.json')).sort()) {
    const file = join(dir, f);
    const r = PolicyFileSchema.safeParse(readJson(file));
    if (!r.success) throw new ConfigError(`invalid policy file: ${formatIssues(file, r.error)}`, 'fix the file or remove it');
    for (const [mode, p] of Object.entries(r.data.modes)) if (p) into.set(mode, { ...p, source: file });
  }
}

export function loadPolicies(config: string, builtin = builtinPolicyDir()): Map<string, LoadedPolicy> {
  const m = new Map<string, LoadedPolicy>();
  loadDir(builtin, m);
  loadDir(join(config, 'policies'), m);
  return m;
}

/** The policy of one mode (user files over built-ins); a usage error when none defines it. */
export function policyFor(config: string, mode: ParsedMode): LoadedPolicy {
  const policy = loadPolicies(config).get(mode.name);
  if (!policy) throw new UsageError(`no policy defines mode '${mode.name}'`);
  return policy;
}

function profilePath(config: string, name: string): string {
  return join(config, 'profiles', `${name}.json`);
}

/** The profile called `name`, or null when there is none. */
export function loadProfile(config: string, name: string): (Profile & { source: string }) | null {
  if (!/^[A-Za-z0-9_.-]{1,64}$/.test(name) || name.startsWith('.')) return null;
  const file = profilePath(config, name);
  if (!existsSync(file)) return null;
  const r = ProfileSchema.safeParse(readJson(file));
  if (!r.success) throw new ConfigError(`invalid profile: ${formatIssues(file, r.error)}`, 'fix the file or remove it');
  return { ...r.data, source: file };
}
