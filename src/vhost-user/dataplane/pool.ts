// The main thread's handle on the data-path worker. Each request carries an
// id and the worker answers every one, so the control plane can wait for the
// data path to stop using an fd before it closes it.
import { Worker } from 'node:worker_threads';
import type { PortDataplane, PortStats, QueueSpec, RegionSpec } from './api.js';

export type PollMode = 'event' | 'busy';

/** Where frames a port's guest transmits go. */
export type PeerSpec = { kind: 'port'; port: number } | { kind: 'tap'; fd: number } | { kind: 'none' };

export interface WorkerCommand {
  id: number;
  op: string;
  port?: number;
  [k: string]: unknown;
}

type Pending = { resolve: (v: unknown) => void; reject: (e: Error) => void };

export class DataplaneWorker {
  private readonly worker: Worker;
  private nextId = 1;
  private readonly pending = new Map<number, Pending>();
  private readonly stats = new Map<number, PortStats>();
  private exited = false;

  constructor(mode: PollMode) {
    this.worker = new Worker(new URL('./worker.js', import.meta.url), { workerData: { mode } });
    this.worker.on('message', (m: { id?: number; ok?: boolean; result?: unknown; error?: string; stats?: [number, PortStats][] }) => {
      if (m.stats) for (const [p, s] of m.stats) this.stats.set(p, s);
      if (m.id === undefined) return;
      const p = this.pending.get(m.id);
      if (!p) return;
      this.pending.delete(m.id);
      if (m.ok) p.resolve(m.result);
      else p.reject(new Error(m.error ?? 'data path error'));
    });
    this.worker.on('error', (e) => this.failAll(e));
    this.worker.on('exit', () => { this.exited = true; this.failAll(new Error('data path worker exited')); });
  }

  private failAll(e: Error): void {
    for (const p of this.pending.values()) p.reject(e);
    this.pending.clear();
  }

  call<T = unknown>(op: string, args: Record<string, unknown> = {}): Promise<T> {
    if (this.exited) return Promise.reject(new Error('data path worker is not running'));
    const id = this.nextId++;
    return new Promise<T>((resolve, reject) => {
      this.pending.set(id, { resolve: resolve as (v: unknown) => void, reject });
      this.worker.postMessage({ id, op, ...args });
    });
  }

  statsOf(port: number): PortStats {
    return this.stats.get(port) ?? { txFrames: 0, rxFrames: 0, txDropped: 0, rxDropped: 0, badChains: 0, brokenQueues: 0 };
  }

  /** Asks for fresh counters from the worker. */
  async refreshStats(): Promise<void> {
    await this.call('stats');
  }

  async addPort(port: number, queuePairs: number, peer: PeerSpec): Promise<void> {
    await this.call('addPort', { port, queuePairs, peer });
  }

  async removePort(port: number): Promise<void> {
    await this.call('removePort', { port });
  }

  portDataplane(port: number): PortDataplane {
    return {
      setMemory: (regions: RegionSpec[]) => this.call('setMemory', { port, regions }).then(() => undefined),
      startQueue: (q: number, spec: QueueSpec) => this.call('startQueue', { port, q, spec }).then(() => undefined),
      stopQueue: (q: number) => this.call<number>('stopQueue', { port, q }),
      setCall: (q: number, fd: number) => this.call('setCall', { port, q, fd }).then(() => undefined),
      setEnabled: (q: number, enabled: boolean) => this.call('setEnabled', { port, q, enabled }).then(() => undefined),
      injectFromGuest: (frame: Uint8Array) => this.call('inject', { port, frame }).then(() => undefined),
      reset: () => this.call('reset', { port }).then(() => undefined),
      stats: () => this.statsOf(port),
    };
  }

  async stop(): Promise<void> {
    if (this.exited) return;
    const exited = new Promise((r) => this.worker.once('exit', r));
    try {
      await Promise.race([this.call('shutdown'), new Promise((r) => setTimeout(r, 2000))]);
    } catch { /* already gone */ }
    // Let it finish on its own (it unmaps guest memory on the way out); force only if it hangs.
    const t = setTimeout(() => void this.worker.terminate(), 1000);
    await exited;
    clearTimeout(t);
  }
}
