// iproute2 behind one small interface, for the link kinds the SIOC ioctls
// cannot make (macvlan/macvtap modes, veth pairs, routes, neighbour proxy).
// `ip` is always present where this tool is useful and its JSON output is
// stable; a call costs ~3-5 ms, which only the rarer kernel implementations pay.
// (The npm `netlink` package would be faster but is early-stage and needs
// hand-encoded nested attributes for exactly these link kinds.)
import { execFileSync } from 'node:child_process';
import { SetupError } from '../errors.js';
import { SAFE_PATH, systemBinary } from '../host/context.js';

export class IpError extends SetupError {
  readonly stderr: string;
  readonly args: string[];
  constructor(args: string[], stderr: string) {
    super(`'ip ${args.join(' ')}' failed: ${stderr.trim().split('\n')[0] || 'unknown error'}`);
    this.stderr = stderr;
    this.args = args;
  }
}

let ipBinary: string | null | undefined;

/** Runs iproute2's `ip` from the system directories (never the caller's PATH) with a clean environment. */
export function ip(...args: string[]): string {
  ipBinary ??= systemBinary('ip');
  if (!ipBinary) throw new SetupError("the 'ip' command (iproute2) is not installed", 'install iproute2');
  try {
    return execFileSync(ipBinary, args, { encoding: 'utf8', stdio: ['ignore', 'pipe', 'pipe'], env: { PATH: SAFE_PATH, LC_ALL: 'C' } });
  } catch (e) {
    const err = e as { stderr?: string; message: string; code?: string };
    if (err.code === 'ENOENT') throw new SetupError("the 'ip' command (iproute2) is not installed", 'install iproute2');
    throw new IpError(args, err.stderr ?? err.message);
  }
}

export function ipJson<T = Record<string, unknown>>(...args: string[]): T[] {
  const out = ip('-json', ...args).trim();
  return out ? (JSON.parse(out) as T[]) : [];
}

export interface LinkInfo {
  ifname: string;
  ifindex: number;
  mtu: number;
  address?: string;
  master?: string;
  operstate?: string;
  flags?: string[];
  linkinfo?: { info_kind?: string; info_data?: Record<string, unknown>; info_slave_kind?: string };
}

/** Link details, or null when the interface does not exist. */
export function linkShow(name: string): LinkInfo | null {
  try {
    return ipJson<LinkInfo>('-d', 'link', 'show', 'dev', name)[0] ?? null;
  } catch (e) {
    if (e instanceof IpError && /does not exist|Cannot find device/i.test(e.stderr)) return null;
    throw e;
  }
}

/** Deletes a link; already gone is success (teardown must be idempotent). */
export function linkDelete(name: string): void {
  try {
    ip('link', 'del', 'dev', name);
  } catch (e) {
    if (e instanceof IpError && /does not exist|Cannot find device/i.test(e.stderr)) return;
    throw e;
  }
}

export function linkKind(l: LinkInfo): string {
  return l.linkinfo?.info_kind ?? 'device';
}
