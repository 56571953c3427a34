// `ip` inside another network namespace (a CNI sandbox, given as a path):
// iproute2 run there through nsenter, so this process never changes namespace
// itself (Node's threads would not all follow a setns).
import { execFileSync } from 'node:child_process';
import { statSync } from 'node:fs';
import { IpError, type LinkInfo } from './ip.js';
import { SetupError } from '../errors.js';
import { SAFE_PATH, systemBinary } from '../host/context.js';

export function netnsExists(path: string): boolean {
  try { statSync(path); return true; } catch { return false; }
}

let nsenter: string | null | undefined;
let ipBin: string | null | undefined;

/** `ip ARGS` inside the sandbox (both programs from the system directories only). */
export function sip(netns: string, ...args: string[]): string {
  try {
    nsenter ??= systemBinary('nsenter');
    ipBin ??= systemBinary('ip');
    if (!nsenter || !ipBin) throw new SetupError("'nsenter' (util-linux) or 'ip' (iproute2) is not installed in the system directories", 'install util-linux and iproute2');
    return execFileSync(nsenter, [`--net=${netns}`, ipBin, ...args], { encoding: 'utf8', stdio: ['ignore', 'pipe', 'pipe'], env: { PATH: SAFE_PATH, LC_ALL: 'C' } });
  } catch (e) {
    if (e instanceof SetupError) throw e;
    const err = e as { stderr?: string; message: string };
    throw new IpError(args, err.stderr ?? err.message);
  }
}

/** A link in the sandbox, or null. */
export function sLink(netns: string, name: string): LinkInfo | null {
  try {
    return (JSON.parse(sip(netns, '-json', '-d', 'link', 'show', 'dev', name) || '[]') as LinkInfo[])[0] ?? null;
  } catch (e) {
    if (e instanceof IpError && /does not exist|Cannot find device/i.test(e.stderr)) return null;
    throw e;
  }
}

export interface AddrInfo { family: string; local: string; prefixlen: number }

export function sAddrs(netns: string, name: string): AddrInfo[] {
  const j = JSON.parse(sip(netns, '-json', 'addr', 'show', 'dev', name) || '[]') as { addr_info?: AddrInfo[] }[];
  return j[0]?.addr_info ?? [];
}

/** This process's own network namespace, as a path another process can open. */
export function ownNetns(): string { return `/proc/${process.pid}/ns/net`; }
