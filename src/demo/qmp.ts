// A minimal QMP client: enough to drive QEMU in the demo, tests and benchmarks
// (capabilities, commands, quit). Events are ignored.
import { connect, type Socket } from 'node:net';
import { readJsonLines } from '../json-lines.js';

type Waiter = { res: (msg: Record<string, unknown>) => void; rej: (e: Error) => void };

export class Qmp {
  private waiters: Waiter[] = [];
  private closed = false;
  private constructor(private sock: Socket) {
    sock.on('error', () => undefined); // 'close' follows
    readJsonLines(sock, (msg) => {
      if (!('event' in msg)) this.waiters.shift()?.res(msg);
    }, () => {
      // QEMU gone (it quit, or died before it greeted): nothing waits for an answer that cannot come.
      this.closed = true;
      for (const w of this.waiters.splice(0)) w.rej(new Error('QMP connection closed'));
    });
  }

  /** Retries for `timeoutMs` while QEMU comes up; `gone` ends the retries early (QEMU exited: nothing will listen). */
  static async connect(path: string, timeoutMs = 10000, greetMs = 30_000, gone: () => boolean = () => false): Promise<Qmp> {
    const deadline = Date.now() + timeoutMs;
    for (;;) {
      try {
        const sock = await new Promise<Socket>((res, rej) => {
          const s = connect(path, () => res(s));
          s.once('error', rej);
        });
        const q = new Qmp(sock);
        try {
          // A QEMU that accepted the connection but never greets is stuck: bounded, not forever.
          await withTimeout(q.next(), greetMs, 'no QMP greeting'); // greeting
          await withTimeout(q.cmd('qmp_capabilities'), greetMs, 'no answer to qmp_capabilities');
        } catch (e) {
          q.close();
          throw e;
        }
        return q;
      } catch (e) {
        if (Date.now() > deadline || gone()) throw e;
        await new Promise((r) => setTimeout(r, 50));
      }
    }
  }

  private next(): Promise<Record<string, unknown>> {
    if (this.closed) return Promise.reject(new Error('QMP connection closed'));
    return new Promise((res, rej) => this.waiters.push({ res, rej }));
  }

  async cmd(execute: string, args?: Record<string, unknown>): Promise<Record<string, unknown>> {
    const p = this.next();
    this.sock.write(JSON.stringify(args ? { execute, arguments: args } : { execute }) + '\n');
    return p;
  }

  close(): void { this.sock.destroy(); }
}

function withTimeout<T>(p: Promise<T>, ms: number, what: string): Promise<T> {
  let t: NodeJS.Timeout | undefined;
  return Promise.race([p, new Promise<T>((_, rej) => { t = setTimeout(() => rej(new Error(`${what} within ${ms / 1000} s`)), ms); })])
    .finally(() => clearTimeout(t));
}
