// Drives the helper exactly the way libvirt does: socketpair, exec with one
// end as fd 3, receive one byte + one fd, then TUNGETIFF on it.
import { spawn } from 'node:child_process';
import { closeFd } from '../../src/sys/libc.js';
import { recvWithFds, socketPair } from '../../src/sys/unix-fd.js';
import { tunGetIff } from '../../src/sys/tun.js';
import { BIN } from './paths.js';
import type { NetNs } from './netns.js';

export interface HelperOutcome {
  code: number | null;
  stderr: string;
  stdout: string;
  bytes: number;
  fds: number[];
  /** TUNGETIFF of the single received fd, when there was one. */
  iff: { name: string; flags: number } | null;
}

export async function runHelperLikeLibvirt(ns: NetNs | null, args: string[], env: NodeJS.ProcessEnv = process.env, wrap: string[] = []): Promise<HelperOutcome> {
  const [ours, theirs] = socketPair();
  const cmd = [...wrap, process.execPath, BIN, ...args.map((a) => a.replace('{FD}', '3'))];
  const full = ns ? ['ip', 'netns', 'exec', ns.name, ...cmd] : cmd;
  const child = spawn(full[0]!, full.slice(1), { stdio: ['ignore', 'pipe', 'pipe', theirs], env });
  closeFd(theirs);
  let stderr = '';
  let stdout = '';
  child.stderr!.setEncoding('utf8').on('data', (d: string) => { stderr += d; });
  child.stdout!.setEncoding('utf8').on('data', (d: string) => { stdout += d; });
  const code = await new Promise<number | null>((res) => child.once('exit', (c) => res(c)));
  let bytes = 0;
  let fds: number[] = [];
  try {
    // The helper has exited: everything it sent is queued, so a non-blocking read sees it all.
    const r = recvWithFds(ours, new Uint8Array(16), 0, 16, 0x40 /* MSG_DONTWAIT */);
    bytes = r.n;
    fds = r.fds;
  } catch { /* nothing sent */ }
  closeFd(ours);
  const iff = fds.length === 1 ? tunGetIff(fds[0]!) : null;
  return { code, stderr, stdout, bytes, fds, iff };
}

export function closeAll(fds: number[]): void {
  for (const fd of fds) closeFd(fd);
}
