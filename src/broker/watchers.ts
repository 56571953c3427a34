// The broker's side of its watcher process (watch-child.ts): started with the
// broker, told each endpoint to watch, restarted if it dies (then told every
// endpoint still recorded, as after a broker restart).
import { fork, type ChildProcess } from 'node:child_process';
import { fileURLToPath } from 'node:url';
import type { HostContext } from '../host/context.js';
import { lifetimeOf, listEndpoints } from '../state/endpoints.js';

const CHILD = fileURLToPath(new URL('./watch-child.js', import.meta.url));

export class Watchers {
  private proc: ChildProcess | null = null;
  private closed = false;

  constructor(private readonly host: HostContext, private readonly log: (line: string) => void) {
    this.start();
  }

  private start(): void {
    const p = fork(CHILD, [JSON.stringify(this.host)], { stdio: ['ignore', 'ignore', 'inherit', 'ipc'], serialization: 'json' });
    this.proc = p;
    p.on('error', () => undefined);
    p.once('exit', (code, signal) => {
      if (this.closed) return;
      this.log(`broker: the watcher process exited (${signal ?? `exit ${code}`}); restarting it`);
      setTimeout(() => {
        if (this.closed) return;
        this.start();
        this.adoptAll();
      }, 1000).unref();
    });
  }

  /** Watches endpoint `id` until its owner is gone, then releases it. */
  watch(id: string): void {
    if (this.proc?.connected) this.proc.send(id);
  }

  /** Every recorded endpoint that ends with its owner or its fd. */
  adoptAll(): void {
    for (const e of listEndpoints(this.host.stateDir)) {
      if ('record' in e && lifetimeOf(e.record) !== 'manual') this.watch(e.record.id);
    }
  }

  close(): void {
    this.closed = true;
    this.proc?.kill('SIGTERM');
  }
}
