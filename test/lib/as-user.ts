// Runs one of our test scripts as another user (setpriv, no supplementary
// groups, optionally inside a test namespace) and resolves with the one JSON
// line it prints; a looping job is stopped by closing its stdin (stop()).
import { spawn } from 'node:child_process';
import type { NetNs } from './netns.js';

export interface UserRun<T> {
  result: Promise<T>;
  /** Closes the job's stdin: a looping job finishes its round and reports. */
  stop: () => void;
}

export function runAsUser<T>(uid: number, script: string, job: object, opts: { gid?: number; ns?: NetNs } = {}): UserRun<T> {
  const argv = ['setpriv', `--reuid=${uid}`, `--regid=${opts.gid ?? uid}`, '--clear-groups', process.execPath, script, JSON.stringify(job)];
  const cmd = opts.ns ? ['ip', 'netns', 'exec', opts.ns.name, ...argv] : argv;
  const p = spawn(cmd[0]!, cmd.slice(1), { stdio: ['pipe', 'pipe', 'pipe'] });
  let out = '';
  let err = '';
  p.stdout!.setEncoding('utf8').on('data', (d: string) => { out += d; });
  p.stderr!.setEncoding('utf8').on('data', (d: string) => { err += d; });
  p.stdin!.on('error', () => undefined);
  const kind = String((job as { kind?: unknown }).kind);
  const result = new Promise<T>((res, rej) => {
    p.once('exit', (code) => {
      if (code !== 0) return rej(new Error(`${kind} as uid ${uid}: exit ${code}: ${err}`));
      try { res(JSON.parse(out) as T); } catch { rej(new Error(`${kind} as uid ${uid}: not one JSON line: ${out}${err}`)); }
    });
  });
  return { result, stop: () => p.stdin!.end() };
}
