// A client of the switch's control socket (JSON lines), for tests: requests
// answered in order, event lines collected apart.
import { connect, type Socket } from 'node:net';
import { readJsonLines } from '../../src/json-lines.js';

export type Reply = { ok: boolean; error?: string; [k: string]: unknown };

export class ControlClient {
  readonly events: Record<string, unknown>[] = [];
  private readonly waiting: ((r: Reply) => void)[] = [];
  private closed = false;

  private constructor(readonly sock: Socket) {
    readJsonLines(sock, (o) => {
      if ('event' in o) this.events.push(o);
      else this.waiting.shift()?.(o as Reply);
    }, () => { this.closed = true; });
    sock.on('error', () => undefined);
  }

  static async connect(path: string): Promise<ControlClient> {
    const sock = connect(path);
    await new Promise<void>((res, rej) => { sock.once('connect', res); sock.once('error', rej); });
    return new ControlClient(sock);
  }

  get isClosed(): boolean { return this.closed; }

  /** Sends a raw line (for malformed-input tests) and waits for its reply. */
  raw(line: string, timeoutMs = 10000): Promise<Reply> {
    return new Promise<Reply>((res, rej) => {
      const t = setTimeout(() => rej(new Error(`no reply to ${line.slice(0, 100)}`)), timeoutMs);
      this.waiting.push((r) => { clearTimeout(t); res(r); });
      this.sock.write(`${line}\n`);
    });
  }

  request(obj: object, timeoutMs?: number): Promise<Reply> { return this.raw(JSON.stringify(obj), timeoutMs); }

  async waitEvent(pred: (e: Record<string, unknown>) => boolean, timeoutMs = 10000): Promise<Record<string, unknown>> {
    const deadline = Date.now() + timeoutMs;
    for (;;) {
      const e = this.events.find(pred);
      if (e) return e;
      if (Date.now() > deadline) throw new Error(`control: no matching event within ${timeoutMs} ms; got ${JSON.stringify(this.events)}`);
      await new Promise((r) => setTimeout(r, 20));
    }
  }

  close(): void { this.sock.destroy(); }
}
