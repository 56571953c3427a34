// A host on the far side of a switch uplink, for tests: a packet socket on an
// interface inside a test namespace (in a child process, since the test
// process lives in the root namespace). It records every frame it receives
// and sends frames on demand.
import type { ChildProcess } from 'node:child_process';
import { createInterface } from 'node:readline';
import { fileURLToPath } from 'node:url';
import type { NetNs } from './netns.js';

const MAIN = fileURLToPath(new URL('./packet-peer-main.js', import.meta.url));

export class PacketPeer {
  readonly frames: Buffer[] = [];
  private readonly proc: ChildProcess;
  private ready = false;
  private synced = 0;
  private err = '';

  constructor(ns: NetNs, ifname: string) {
    this.proc = ns.spawn(process.execPath, [MAIN, ifname], { stdio: ['pipe', 'pipe', 'pipe'] });
    this.proc.stderr!.setEncoding('utf8').on('data', (d: string) => { this.err += d; });
    createInterface({ input: this.proc.stdout! }).on('line', (l) => {
      if (l === 'READY') this.ready = true;
      else if (l === 'SYNCED') this.synced++;
      else this.frames.push(Buffer.from(l, 'hex'));
    });
    process.on('exit', () => { try { this.proc.kill('SIGKILL'); } catch { /* gone */ } });
  }

  async started(timeoutMs = 10000): Promise<void> {
    const deadline = Date.now() + timeoutMs;
    while (!this.ready) {
      if (Date.now() > deadline || this.proc.exitCode !== null) throw new Error(`packet peer did not start: ${this.err}`);
      await new Promise((r) => setTimeout(r, 20));
    }
  }

  send(frame: Uint8Array): void {
    this.proc.stdin!.write(`${Buffer.from(frame).toString('hex')}\n`);
  }

  /** Resolves once the child has written every frame sent before this call to its socket. */
  async sync(timeoutMs = 30000): Promise<void> {
    const want = this.synced + 1;
    this.proc.stdin!.write('SYNC\n');
    const deadline = Date.now() + timeoutMs;
    while (this.synced < want) {
      if (Date.now() > deadline || this.proc.exitCode !== null) throw new Error(`packet peer: no SYNCED within ${timeoutMs} ms: ${this.err}`);
      await new Promise((r) => setTimeout(r, 20));
    }
  }

  /** Frames received so far that match. */
  matching(pred: (f: Buffer) => boolean): Buffer[] { return this.frames.filter(pred); }

  async waitFor(pred: (f: Buffer) => boolean, timeoutMs = 5000): Promise<Buffer> {
    const deadline = Date.now() + timeoutMs;
    for (;;) {
      const f = this.frames.find(pred);
      if (f) return f;
      if (Date.now() > deadline) throw new Error(`packet peer: no matching frame within ${timeoutMs} ms (${this.frames.length} frames seen)`);
      await new Promise((r) => setTimeout(r, 20));
    }
  }

  stop(): void {
    this.proc.stdin!.end();
    this.proc.kill('SIGKILL');
  }
}
