// Our vhost-user back-end as a separate process, run through the real CLI
// (optionally inside a network namespace, where its taps live).
import { spawn, type ChildProcess } from 'node:child_process';
import { existsSync } from 'node:fs';
import { BIN } from './paths.js';
import type { NetNs } from './netns.js';

export interface PortStatsLine { port: number; txFrames: number; rxFrames: number; txDropped: number; rxDropped: number; badChains: number; brokenQueues: number; connected: boolean }

export class Serve {
  readonly proc: ChildProcess;
  private err = '';
  readonly exited: Promise<number | null>;

  constructor(args: string[], ns?: NetNs) {
    const cmd = [process.execPath, BIN, 'vhost-user', 'serve', ...args];
    this.proc = ns ? ns.spawn(cmd[0]!, cmd.slice(1), { stdio: ['ignore', 'ignore', 'pipe'] }) : spawn(cmd[0]!, cmd.slice(1), { stdio: ['ignore', 'ignore', 'pipe'] });
    this.proc.stderr!.setEncoding('utf8').on('data', (d: string) => { this.err += d; });
    this.exited = new Promise((res) => this.proc.once('exit', (c) => res(c)));
    process.on('exit', () => { try { this.proc.kill('SIGKILL'); } catch { /* gone */ } });
  }

  log(): string { return this.err; }

  async ready(sockets: string[], timeoutMs = 10000): Promise<void> {
    const deadline = Date.now() + timeoutMs;
    while (Date.now() < deadline) {
      if (this.proc.exitCode !== null) throw new Error(`vhost-user serve exited: ${this.err}`);
      if (/serving \d+ port/.test(this.err) && sockets.every((s) => existsSync(s))) return;
      await new Promise((r) => setTimeout(r, 50));
    }
    throw new Error(`vhost-user serve not ready: ${this.err}`);
  }

  async waitLog(re: RegExp, timeoutMs = 10000): Promise<boolean> {
    const deadline = Date.now() + timeoutMs;
    while (Date.now() < deadline) {
      if (re.test(this.err)) return true;
      if (this.proc.exitCode !== null) return false;
      await new Promise((r) => setTimeout(r, 50));
    }
    return false;
  }

  /** SIGTERM, then the final counters it printed. */
  async stop(): Promise<{ code: number | null; final: PortStatsLine[] }> {
    if (this.proc.exitCode === null) this.proc.kill('SIGTERM');
    const t = setTimeout(() => this.proc.kill('SIGKILL'), 10000);
    const code = await this.exited;
    clearTimeout(t);
    const m = /final counters: (\[.*\])/.exec(this.err);
    return { code, final: m ? (JSON.parse(m[1]!) as PortStatsLine[]) : [] };
  }
}
