// IPAM delegated to another CNI plugin (host-local, dhcp, static...) found in
// CNI_PATH, called the way a runtime calls a plugin. It is asked for its
// versions first and handed the newest one both of us speak: Debian's
// host-local 1.1.1 refuses a 1.1.0 config outright. GC and STATUS are passed
// on (CNI 1.1) only to a delegate whose version defines them: sent to an
// older one they would fail for the wrong reason (host-local 1.1.1 answers
// GC and STATUS with code 3, "missing containerID").
import { execFileSync } from 'node:child_process';
import { accessSync, constants as fsc } from 'node:fs';
import { join } from 'node:path';
import { SAFE_PATH } from '../host/context.js';
import type { NetConf } from './config.js';
import type { CniCommand, CniEnv } from './env.js';
import { CniCode, CniError } from './errors.js';
import { readResult, type CniResult } from './result.js';
import { definesCommand, negotiate } from './version.js';

/** The plugin's path in CNI_PATH, like libcni's FindInPath. */
function findPlugin(type: string, path: readonly string[]): string {
  if (!path.length) throw new CniError(CniCode.INVALID_ENV, `CNI_PATH is empty: cannot find the IPAM plugin '${type}'`);
  for (const dir of path) {
    const p = join(dir, type);
    try { accessSync(p, fsc.X_OK); return p; } catch { /* next */ }
  }
  throw new CniError(CniCode.INVALID_CONFIG, `IPAM plugin '${type}' not found in CNI_PATH`, `searched ${path.join(', ')}`);
}

interface Exec { code: number; stdout: string; stderr: string }

function run(bin: string, env: NodeJS.ProcessEnv, stdin: string): Exec {
  try {
    const stdout = execFileSync(bin, [], { env, input: stdin, encoding: 'utf8', stdio: ['pipe', 'pipe', 'pipe'], timeout: 60_000 });
    return { code: 0, stdout, stderr: '' };
  } catch (e) {
    const err = e as { status?: number | null; stdout?: string; stderr?: string; message: string };
    if (err.status === undefined || err.status === null) throw new CniError(CniCode.IO_FAILURE, `running IPAM plugin ${bin} failed: ${err.message}`);
    return { code: err.status, stdout: err.stdout ?? '', stderr: err.stderr ?? '' };
  }
}

/** Rethrows the delegate's error JSON as ours, with its code. */
function failed(bin: string, r: Exec): never {
  let j: { code?: unknown; msg?: unknown; details?: unknown } = {};
  try { j = JSON.parse(r.stdout) as typeof j; } catch { /* not JSON */ }
  const code = typeof j.code === 'number' ? j.code : CniCode.IO_FAILURE;
  const msg = typeof j.msg === 'string' ? j.msg : (r.stderr.trim() || r.stdout.trim() || `exit status ${r.code}`);
  throw new CniError(code, `IPAM plugin ${bin}: ${msg}`, typeof j.details === 'string' ? j.details : undefined);
}

export class Ipam {
  private version: string | null = null;
  readonly bin: string;
  constructor(private readonly conf: NetConf, private readonly env: CniEnv, private readonly rawConf: Record<string, unknown>) {
    this.bin = findPlugin(conf.ipam!.type, env.path);
  }

  /** The runtime's CNI_* variables on a clean environment (no NODE_OPTIONS, LD_PRELOAD... of ours). */
  private childEnv(command: CniCommand, extra: Record<string, string> = {}): NodeJS.ProcessEnv {
    const env: NodeJS.ProcessEnv = { PATH: SAFE_PATH, LC_ALL: 'C' };
    for (const [k, v] of Object.entries(this.env.raw)) if (k.startsWith('CNI_') && v !== undefined) env[k] = v;
    return { ...env, CNI_COMMAND: command, ...extra };
  }

  /** The version to speak with the delegate, asked once. */
  private speak(): string {
    if (this.version) return this.version;
    const r = run(this.bin, this.childEnv('VERSION'), JSON.stringify({ cniVersion: this.conf.cniVersion }));
    let theirs: string[] = ['0.1.0', '0.2.0'];
    if (r.code === 0) {
      try { theirs = (JSON.parse(r.stdout) as { supportedVersions?: string[] }).supportedVersions ?? theirs; } catch { /* pre-VERSION plugin */ }
    }
    const v = negotiate(this.conf.cniVersion, theirs);
    if (!v) throw new CniError(CniCode.INCOMPATIBLE_VERSION, `IPAM plugin ${this.bin} speaks none of our CNI versions up to ${this.conf.cniVersion}`, `it supports ${theirs.join(', ')}`);
    return (this.version = v);
  }

  /** Our config as the delegate should see it: its version, no prevResult (it is not in a chain). */
  private stdin(extra: Record<string, unknown> = {}): string {
    const { prevResult: _p, ...rest } = this.rawConf;
    return JSON.stringify({ ...rest, cniVersion: this.speak(), ...extra });
  }

  add(): CniResult {
    const r = run(this.bin, this.childEnv('ADD'), this.stdin());
    if (r.code !== 0) failed(this.bin, r);
    let v: unknown;
    try { v = JSON.parse(r.stdout); } catch { throw new CniError(CniCode.DECODE_FAILURE, `IPAM plugin ${this.bin} printed no JSON result`); }
    return readResult(v, `the result of IPAM plugin ${this.bin}`);
  }

  check(prev: Record<string, unknown>): void {
    const r = run(this.bin, this.childEnv('CHECK'), this.stdin({ prevResult: prev }));
    if (r.code !== 0) failed(this.bin, r);
  }

  /** Whether the delegate, in the version we speak with it, has `command` (GC and STATUS came with 1.1.0). */
  knows(command: 'GC' | 'STATUS'): boolean {
    return definesCommand(command, this.speak());
  }

  /** GC: our config carries cni.dev/valid-attachments; the delegate frees what it holds for anything else. */
  gc(): void {
    const r = run(this.bin, this.childEnv('GC'), this.stdin());
    if (r.code !== 0) failed(this.bin, r);
  }

  /** STATUS: its error (50, 51, or any other code) is ours. */
  status(): void {
    const r = run(this.bin, this.childEnv('STATUS'), this.stdin());
    if (r.code !== 0) failed(this.bin, r);
  }

  /** Idempotent; `ids` replaces the environment's container id and ifname (GC has none). */
  del(ids?: { containerId: string; ifname: string; netns: string }): void {
    const extra: Record<string, string> = ids ? { CNI_CONTAINERID: ids.containerId, CNI_IFNAME: ids.ifname, CNI_NETNS: ids.netns } : {};
    const r = run(this.bin, this.childEnv('DEL', extra), this.stdin());
    if (r.code !== 0) failed(this.bin, r);
  }
}
