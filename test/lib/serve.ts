// Our vhost-user back-end as a separate process, run through the real CLI
// (optionally inside a network namespace, where its taps live).
import { spawn, type ChildProcess } from 'node:child_process';
import { existsSync } from 'node:fs';
import { BIN } from './paths.js';
import type { NetNs } from './netns.js';

export interface PortStatsLine { port: number; txFrames: number; txNative: number; rxFrames: number; txDropped: number; rxDropped: number; badChains: number; brokenQueues: number; connected: boolean }

/** One `--events` line. */
export interface EventLine { event: string; port: number | 'uplink'; socket: string | null; time: string; mac?: string; moved?: boolean; reason?: string }

/** The `--stats-interval` lines in a log, in order: `vhost-user: stats port=N socket=S txFrames=...`. */
export type StatsLine = Omit<PortStatsLine, 'port' | 'connected'> & { port: number | 'uplink'; socket: string };

export function statsLinesOf(log: string): StatsLine[] {
  return [...log.matchAll(/^vhost-user: stats port=(\S+) socket=(\S+) (.*)$/gm)].map((m) => {
    const counters = Object.fromEntries(m[3]!.split(' ').map((kv) => kv.split('=')).map(([k, v]) => [k!, Number(v)]));
    return { ...counters, port: m[1] === 'uplink' ? 'uplink' : Number(m[1]), socket: m[2]! } as StatsLine;
  });
}

export class Serve {
  readonly proc: ChildProcess;
  private err = '';
  private out = '';
  /** Events printed on stdout (--events), in order. */
  readonly events: EventLine[] = [];
  readonly exited: Promise<number | null>;

  /** `env`: added to ours (e.g. QNH_NATIVE=0 for the TypeScript data path alone). */
  constructor(args: string[], ns?: NetNs, env: Record<string, string> = {}) {
    // The host's /etc/qemu-net-helper/switch.json, if any, is no test's business.
    const cmd = [process.execPath, BIN, 'vhost-user', 'serve', ...args, ...(args.includes('--config') ? [] : ['--config', 'none'])];
    const opts = { stdio: ['ignore', 'pipe', 'pipe'] as ['ignore', 'pipe', 'pipe'], env: { ...process.env, ...env } };
    this.proc = ns ? ns.spawn(cmd[0]!, cmd.slice(1), opts) : spawn(cmd[0]!, cmd.slice(1), opts);
    this.proc.stderr!.setEncoding('utf8').on('data', (d: string) => { this.err += d; });
    this.proc.stdout!.setEncoding('utf8').on('data', (d: string) => {
      this.out += d;
      let i: number;
      while ((i = this.out.indexOf('\n')) >= 0) {
        const line = this.out.slice(0, i);
        this.out = this.out.slice(i + 1);
        if (!line.trim()) continue;
        try {
          this.events.push(JSON.parse(line) as EventLine);
        } catch {
          this.err += `[stdout, not an event] ${line}\n`; // shows up in failure messages
        }
      }
    });
    this.exited = new Promise((res) => this.proc.once('exit', (c) => res(c)));
    // Dropped once the back-end is gone: a bench starts many and would pile up listeners.
    const kill = (): void => { try { this.proc.kill('SIGKILL'); } catch { /* gone */ } };
    process.on('exit', kill);
    void this.exited.then(() => process.off('exit', kill));
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

  /** Waits for an event matching `pred` (also one already printed); returns its index in `events`. */
  async waitEvent(pred: (e: EventLine) => boolean, timeoutMs = 10000): Promise<number> {
    const deadline = Date.now() + timeoutMs;
    for (;;) {
      const i = this.events.findIndex(pred);
      if (i >= 0) return i;
      if (Date.now() > deadline || this.proc.exitCode !== null) throw new Error(`no matching event within ${timeoutMs} ms; events: ${JSON.stringify(this.events)}\n${this.err.slice(-2000)}`);
      await new Promise((r) => setTimeout(r, 20));
    }
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
