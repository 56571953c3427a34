// The main thread's handle on the data-path worker. Each request carries an
// id and the worker answers every one, so the control plane can wait for the
// data path to stop using an fd before it closes it. Commands are the typed
// union of commands.ts: call('stopQueue', ...) is known to return a number.
import { Worker } from 'node:worker_threads';
import { zeroStats, type LogSpec, type PortDataplane, type PortStats, type QueueSpec, type RegionSpec } from './api.js';
import type { CommandOf, CommandResults, MacEntry, Op, PollMode, WorkerMessage } from './commands.js';
import type { PortModeName } from '../switch/forwarding.js';
import type { PacketRings } from '../../sys/packet.js';
import type { XskTxInfo } from '../../sys/xsk.js';

export type { PollMode } from './commands.js';

type Pending = { resolve: (v: unknown) => void; reject: (e: Error) => void };
type Args<O extends Op> = Omit<CommandOf<O>, 'op'>;

const ZERO_STATS: Readonly<PortStats> = zeroStats();

export class DataplaneWorker {
  private readonly worker: Worker;
  private nextId = 1;
  private readonly pending = new Map<number, Pending>();
  private readonly stats = new Map<number, PortStats>();
  private exited = false;
  /** A MAC was learned or moved (the worker reports only changes). */
  onMacLearned: (e: { mac: string; port: number; moved: boolean }) => void = () => undefined;

  constructor(mode: PollMode) {
    this.worker = new Worker(new URL('./worker.js', import.meta.url), { workerData: { mode } });
    this.worker.on('message', (m: WorkerMessage) => {
      if ('stats' in m) {
        for (const [p, s] of m.stats) this.stats.set(p, s);
        return;
      }
      if ('event' in m) {
        this.onMacLearned({ mac: m.mac, port: m.port, moved: m.moved });
        return;
      }
      const p = this.pending.get(m.id);
      if (!p) return;
      this.pending.delete(m.id);
      if (m.ok) p.resolve(m.result);
      else p.reject(new Error(m.error));
    });
    this.worker.on('error', (e) => this.failAll(e));
    this.worker.on('exit', () => { this.exited = true; this.failAll(new Error('data path worker exited')); });
  }

  private failAll(e: Error): void {
    for (const p of this.pending.values()) p.reject(e);
    this.pending.clear();
  }

  call<O extends Op>(op: O, args: Args<O>): Promise<CommandResults[O]> {
    if (this.exited) return Promise.reject(new Error('data path worker is not running'));
    const id = this.nextId++;
    return new Promise<CommandResults[O]>((resolve, reject) => {
      this.pending.set(id, { resolve: resolve as (v: unknown) => void, reject });
      this.worker.postMessage({ id, op, ...args });
    });
  }

  statsOf(port: number): PortStats {
    return this.stats.get(port) ?? { ...ZERO_STATS };
  }

  /** Asks for fresh counters from the worker. */
  async refreshStats(): Promise<void> {
    await this.call('stats', {});
  }

  macs(): Promise<MacEntry[]> { return this.call('macs', {}); }

  async addPort(port: number, queuePairs: number, mode: PortModeName): Promise<void> {
    await this.call('addPort', { port, queuePairs, mode });
  }

  async removePort(port: number): Promise<void> {
    await this.call('removePort', { port });
    this.stats.delete(port);
  }

  async setMode(port: number, mode: PortModeName): Promise<void> {
    await this.call('setMode', { port, mode });
  }

  async setUplink(fd: number, rings?: PacketRings, vnetHdr = false, senderFd = -1, xsk: XskTxInfo | null = null): Promise<void> {
    await this.call('setUplink', rings ? { fd, rings, vnetHdr, senderFd, ...(xsk ? { xsk } : {}) } : { fd, vnetHdr });
  }

  portDataplane(port: number): PortDataplane {
    return {
      setMemory: (regions: RegionSpec[]) => this.call('setMemory', { port, regions }).then(() => undefined),
      setLog: (log: LogSpec) => this.call('setLog', { port, log }).then(() => undefined),
      startQueue: (q: number, spec: QueueSpec) => this.call('startQueue', { port, q, spec }).then(() => undefined),
      stopQueue: (q: number) => this.call('stopQueue', { port, q }),
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
    // The bound on a worker that does not answer is cleared once it has: a
    // pending timer would hold the process (and `serve`'s exit) for its full 2 s.
    let bound: NodeJS.Timeout | undefined;
    try {
      await Promise.race([this.call('shutdown', {}), new Promise((r) => { bound = setTimeout(r, 2000); })]);
    } catch { /* already gone */ } finally {
      clearTimeout(bound);
    }
    // Let it finish on its own (it unmaps guest memory on the way out); force only if it hangs.
    const t = setTimeout(() => void this.worker.terminate(), 1000);
    await exited;
    clearTimeout(t);
  }
}
