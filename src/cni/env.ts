// The runtime's half of a CNI call that is not on stdin: CNI_* environment
// variables, checked the way the spec words them (a missing one is code 4).
import { CniCode, CniError } from './errors.js';

export type CniCommand = 'ADD' | 'DEL' | 'CHECK' | 'VERSION' | 'STATUS' | 'GC';
const COMMANDS: readonly CniCommand[] = ['ADD', 'DEL', 'CHECK', 'VERSION', 'STATUS', 'GC'];

export interface CniEnv {
  command: CniCommand;
  containerId: string;
  netns: string;
  ifname: string;
  /** CNI_ARGS as key=value pairs (IgnoreUnknown, K8S_POD_NAME, ...). */
  args: Record<string, string>;
  /** Directories searched for delegated plugins (IPAM). */
  path: string[];
  raw: NodeJS.ProcessEnv;
}

// The spec: alphanumeric first, then alphanumerics, '_', '.', '-'.
const CONTAINER_ID_RE = /^[A-Za-z0-9][A-Za-z0-9_.-]*$/;

function need(env: NodeJS.ProcessEnv, key: string): string {
  const v = env[key];
  if (v === undefined || v === '') throw new CniError(CniCode.INVALID_ENV, `${key} is not set`, `the runtime must set ${key} for CNI_COMMAND=${env.CNI_COMMAND}`);
  return v;
}

function parseArgs(text: string | undefined): Record<string, string> {
  const out: Record<string, string> = {};
  if (!text) return out;
  for (const part of text.split(';')) {
    if (!part) continue;
    const eq = part.indexOf('=');
    if (eq <= 0) throw new CniError(CniCode.INVALID_ENV, `CNI_ARGS entry '${part}' is not KEY=VALUE`);
    out[part.slice(0, eq)] = part.slice(eq + 1);
  }
  return out;
}

export function readEnv(env: NodeJS.ProcessEnv): CniEnv {
  const command = env.CNI_COMMAND as CniCommand;
  if (!COMMANDS.includes(command)) {
    throw new CniError(CniCode.INVALID_ENV, `CNI_COMMAND '${String(env.CNI_COMMAND)}' is not one of ${COMMANDS.join(', ')}`);
  }
  const path = (env.CNI_PATH ?? '').split(':').filter(Boolean);
  const base = { command, args: {}, path, raw: env, containerId: '', netns: '', ifname: '' };
  if (command === 'VERSION' || command === 'STATUS' || command === 'GC') return base;
  const containerId = need(env, 'CNI_CONTAINERID');
  if (!CONTAINER_ID_RE.test(containerId)) throw new CniError(CniCode.INVALID_ENV, `CNI_CONTAINERID '${containerId}' has characters the spec does not allow`);
  const ifname = need(env, 'CNI_IFNAME');
  if (ifname.length > 15 || !/^[^\s/:]+$/.test(ifname) || ifname === '.' || ifname === '..') {
    throw new CniError(CniCode.INVALID_ENV, `CNI_IFNAME '${ifname}' is not a valid interface name`, 'at most 15 characters, no whitespace, / or :');
  }
  // DEL may come without a namespace (it is already gone): clean up the host side anyway.
  const netns = command === 'DEL' ? (env.CNI_NETNS ?? '') : need(env, 'CNI_NETNS');
  return { ...base, containerId, ifname, netns, args: parseArgs(env.CNI_ARGS) };
}
