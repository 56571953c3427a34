// CNI spec versions: which we speak, which commands each version knows, and
// picking the version to speak with a delegated plugin (Debian's host-local
// 1.1.1 stops at 1.0.0, so a 1.1.0 config must be handed to it as 1.0.0).
import semver from 'semver';
import { CniCode, CniError } from './errors.js';

export const SUPPORTED_VERSIONS = ['0.3.0', '0.3.1', '0.4.0', '1.0.0', '1.1.0'] as const;
export const LATEST = '1.1.0';

/** Semver order of CNI versions; a short one ("0.4") counts as x.y.0, one that is no version at all sorts lowest. */
export function compareVersions(a: string, b: string): number {
  const v = (s: string) => semver.valid(s) ?? semver.coerce(s, { loose: false })?.version ?? '0.0.0';
  return semver.compare(v(a), v(b));
}

export function isSupported(v: string): boolean { return (SUPPORTED_VERSIONS as readonly string[]).includes(v); }

export function requireSupported(v: string): void {
  if (!isSupported(v)) {
    throw new CniError(CniCode.INCOMPATIBLE_VERSION, 'incompatible CNI versions',
      `config is "${v}", plugin supports [${SUPPORTED_VERSIONS.map((s) => `"${s}"`).join(', ')}]`);
  }
}

/** The first version that defines each command. */
const SINCE: Record<string, string> = { ADD: '0.1.0', DEL: '0.1.0', VERSION: '0.1.0', CHECK: '0.4.0', GC: '1.1.0', STATUS: '1.1.0' };

/** Whether CNI `v` defines `command` (a delegate speaking 1.0.0 knows no GC or STATUS). */
export function definesCommand(command: string, v: string): boolean {
  const since = SINCE[command];
  return !since || compareVersions(v, since) >= 0;
}

export function requireCommandIn(command: string, v: string): void {
  const since = SINCE[command];
  if (since && !definesCommand(command, v)) {
    throw new CniError(CniCode.INCOMPATIBLE_VERSION, `${command} is not defined in CNI ${v}`, `${command} needs cniVersion ${since} or later`);
  }
}

/** The newest version both sides support that is not newer than `wanted`; null when none. */
export function negotiate(wanted: string, theirs: readonly string[]): string | null {
  const common = theirs.filter((v) => isSupported(v) && compareVersions(v, wanted) <= 0).sort(compareVersions);
  return common.at(-1) ?? null;
}
