// Runs a CNI plugin exactly as a runtime does: CNI_* environment, the network
// config on stdin, the result or error JSON read from stdout; inside a
// throwaway "host" namespace so every host-side object stays in it.
import { spawn, spawnSync } from 'node:child_process';
import { existsSync } from 'node:fs';
import { BIN } from './paths.js';
import type { NetNs } from './netns.js';

export const DEBIAN_CNI_DIR = '/usr/lib/cni';
export const haveReferencePlugins = (): boolean => existsSync(`${DEBIAN_CNI_DIR}/host-local`);

export interface CniCall {
  command: string;
  containerId?: string;
  netns?: string;
  ifname?: string;
  path?: string;
  extraEnv?: Record<string, string>;
  /** The plugin binary; default our executable (run with node). */
  plugin?: string;
  /** A command the plugin runs under (e.g. strace), inside the clean environment. */
  wrap?: string[];
}

export interface CniReply { status: number | null; stdout: string; stderr: string; json: any }

function command(host: NetNs, call: CniCall): string[] {
  const env: Record<string, string> = { PATH: process.env.PATH ?? '/usr/bin:/bin', CNI_COMMAND: call.command, ...(call.extraEnv ?? {}) };
  if (call.containerId !== undefined) env.CNI_CONTAINERID = call.containerId;
  if (call.netns !== undefined) env.CNI_NETNS = call.netns;
  if (call.ifname !== undefined) env.CNI_IFNAME = call.ifname;
  env.CNI_PATH = call.path ?? DEBIAN_CNI_DIR;
  const cmd = [...(call.wrap ?? []), ...(call.plugin ? [call.plugin] : [process.execPath, BIN])];
  return ['ip', 'netns', 'exec', host.name, 'env', '-i', ...Object.entries(env).map(([k, v]) => `${k}=${v}`), ...cmd];
}

function reply(status: number | null, stdout: string, stderr: string): CniReply {
  let json: any = null;
  try { json = stdout.trim() ? JSON.parse(stdout) : null; } catch { json = null; }
  return { status, stdout, stderr, json };
}

/** The same, without blocking: for runtimes calling many plugins at once. */
export function cniAsync(host: NetNs, call: CniCall, conf: unknown): Promise<CniReply> {
  const [cmd, ...args] = command(host, call);
  const child = spawn(cmd!, args, { stdio: ['pipe', 'pipe', 'pipe'] });
  let out = '';
  let err = '';
  child.stdout.setEncoding('utf8').on('data', (d: string) => { out += d; });
  child.stderr.setEncoding('utf8').on('data', (d: string) => { err += d; });
  child.stdin.end(typeof conf === 'string' ? conf : JSON.stringify(conf));
  return new Promise((res) => child.once('close', (code) => res(reply(code, out, err))));
}

export function cni(host: NetNs, call: CniCall, conf: unknown): CniReply {
  const [cmd, ...args] = command(host, call);
  const r = spawnSync(cmd!, args, { input: typeof conf === 'string' ? conf : JSON.stringify(conf), encoding: 'utf8', timeout: 120_000 });
  return reply(r.status, r.stdout, r.stderr);
}
