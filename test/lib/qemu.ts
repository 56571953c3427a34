// QEMU as a real helper client: `-machine none` starts in well under a second
// and still runs -netdev helpers, both at start-up and through QMP hotplug.
import { type ChildProcess } from 'node:child_process';
import { existsSync, mkdtempSync, readdirSync, readFileSync, rmSync } from 'node:fs';
import { connect, type Socket } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import type { NetNs } from './netns.js';

export const QEMU = '/usr/bin/qemu-system-x86_64';
export const haveQemu = (): boolean => existsSync(QEMU);

export class Qmp {
  private buf = '';
  private waiters: ((msg: Record<string, unknown>) => void)[] = [];
  private constructor(private sock: Socket) {
    sock.setEncoding('utf8');
    sock.on('data', (d: string) => {
      this.buf += d;
      let i: number;
      while ((i = this.buf.indexOf('\n')) >= 0) {
        const line = this.buf.slice(0, i);
        this.buf = this.buf.slice(i + 1);
        if (!line.trim()) continue;
        const msg = JSON.parse(line) as Record<string, unknown>;
        if ('event' in msg) continue;
        this.waiters.shift()?.(msg);
      }
    });
  }

  static async connect(path: string, timeoutMs = 10000): Promise<Qmp> {
    const deadline = Date.now() + timeoutMs;
    for (;;) {
      try {
        const sock = await new Promise<Socket>((res, rej) => {
          const s = connect(path, () => res(s));
          s.once('error', rej);
        });
        const q = new Qmp(sock);
        await q.next(); // greeting
        await q.cmd('qmp_capabilities');
        return q;
      } catch (e) {
        if (Date.now() > deadline) throw e;
        await new Promise((r) => setTimeout(r, 50));
      }
    }
  }

  private next(): Promise<Record<string, unknown>> {
    return new Promise((res) => this.waiters.push(res));
  }

  async cmd(execute: string, args?: Record<string, unknown>): Promise<Record<string, unknown>> {
    const p = this.next();
    this.sock.write(JSON.stringify(args ? { execute, arguments: args } : { execute }) + '\n');
    return p;
  }

  close(): void { this.sock.destroy(); }
}

export interface QemuRun {
  proc: ChildProcess;
  qmp: Qmp;
  stderr: () => string;
  /** Resolves with the exit code once QEMU is gone. */
  exited: Promise<number | null>;
  dir: string;
  quit: () => Promise<void>;
}

/** Starts `qemu-system-x86_64 -machine none` inside ns with extra args and a QMP socket. */
export async function startQemu(ns: NetNs, extra: string[], env: NodeJS.ProcessEnv = process.env): Promise<QemuRun> {
  const dir = mkdtempSync(join(tmpdir(), 'qnh-qemu-'));
  const qmpPath = join(dir, 'qmp.sock');
  const proc = ns.spawn(QEMU, ['-machine', 'none', '-nodefaults', '-display', 'none', '-S', '-qmp', `unix:${qmpPath},server=on,wait=off`, ...extra], {
    stdio: ['ignore', 'pipe', 'pipe'],
    env,
  });
  let err = '';
  proc.stderr!.setEncoding('utf8').on('data', (d: string) => { err += d; });
  proc.stdout!.resume();
  const exited = new Promise<number | null>((res) => proc.once('exit', (code) => res(code)));
  const race = await Promise.race([Qmp.connect(qmpPath).then((q) => ({ q })), exited.then((code) => ({ code }))]);
  if (!('q' in race)) {
    rmSync(dir, { recursive: true, force: true });
    throw new Error(`QEMU exited (${race.code}) before QMP came up: ${err.trim()}`);
  }
  const qmp = race.q;
  const quit = async (): Promise<void> => {
    try { await Promise.race([qmp.cmd('quit'), new Promise((r) => setTimeout(r, 2000))]); } catch { /* gone */ }
    qmp.close();
    const t = setTimeout(() => proc.kill('SIGKILL'), 3000);
    await exited;
    clearTimeout(t);
    rmSync(dir, { recursive: true, force: true });
  };
  return { proc, qmp, stderr: () => err, exited, dir, quit };
}

/** The QEMU process itself (`ip netns exec` execs into it, so the pid is the same). */
export function tapsHeldBy(pid: number): string[] {
  const out: string[] = [];
  for (const fd of readdirSync(`/proc/${pid}/fdinfo`)) {
    try {
      const m = /^iff:\s*(\S+)/m.exec(readFileSync(`/proc/${pid}/fdinfo/${fd}`, 'utf8'));
      if (m) out.push(m[1]!);
    } catch { /* fd closed meanwhile */ }
  }
  return out;
}
