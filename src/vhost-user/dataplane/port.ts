// A port as the data-path worker sees it: its guest memory (mapped by this
// thread from the fds the control plane received), its started queues, and
// counters. Views of guest memory are dropped before munmap: touching one
// afterwards would be a SIGSEGV, not an exception.
import { fstatSync } from 'node:fs';
import { mapShared, unmap, type Mapping } from '../../sys/mmap.js';
import { GuestMemory, SplitQueue, type MemoryRegion } from '../virtq/index.js';
import type { PortStats, QueueSpec, RegionSpec } from './api.js';
import type { PeerSpec } from './pool.js';

export class WorkerQueue {
  readonly q: SplitQueue;
  enabled: boolean;
  callFd: number;
  constructor(readonly index: number, readonly spec: QueueSpec, mem: GuestMemory) {
    this.q = new SplitQueue(spec.size, { eventIdx: spec.eventIdx, indirectDesc: spec.indirect });
    const err = this.q.setRings(mem, spec.desc, spec.avail, spec.used);
    if (err) throw new Error(`ring ${index}: ${err}`);
    this.q.setBase(spec.lastAvail);
    // After a back-end restart the front-end replays an old base, but the
    // guest's used.idx is the truth: chains the dead back-end had taken are
    // lost; resume from what the guest saw completed (as DPDK does).
    const off = mem.translateUser(spec.used + 2, 2);
    if (off >= 0 && off % 2 === 0 && Atomics.load(mem.u16[mem.lastRegion]!, off / 2) !== (spec.lastAvail & 0xffff)) this.q.resyncFromUsed();
    this.enabled = spec.enabled;
    this.callFd = spec.callFd;
  }
  get isRx(): boolean { return (this.index & 1) === 0; }
  get kickFd(): number { return this.spec.kickFd; }
}

export class WorkerPort {
  mem: GuestMemory | null = null;
  private mappings: Mapping[] = [];
  readonly queues: (WorkerQueue | null)[];
  readonly stats: PortStats = { txFrames: 0, rxFrames: 0, txDropped: 0, rxDropped: 0, badChains: 0, brokenQueues: 0 };

  constructor(readonly id: number, readonly queuePairs: number, readonly peer: PeerSpec) {
    this.queues = new Array<WorkerQueue | null>(queuePairs * 2).fill(null);
  }

  setMemory(regions: RegionSpec[]): void {
    // The control plane stops every running ring before a new table arrives.
    this.queues.fill(null);
    this.unmapAll();
    const mapped: MemoryRegion[] = [];
    try {
      for (const r of regions) {
        // hugetlbfs only maps whole huge pages; st_blksize is the page size there.
        const page = Math.max(4096, fstatSync(r.fd).blksize || 4096);
        const len = Math.ceil((r.mmapOffset + r.size) / page) * page;
        const m = mapShared(r.fd, len);
        this.mappings.push(m);
        mapped.push({ guestPhysAddr: r.guestPhysAddr, size: r.size, userAddr: r.userAddr, bytes: new Uint8Array(m.buffer, r.mmapOffset, r.size) });
      }
      this.mem = mapped.length ? new GuestMemory(mapped) : null;
    } catch (e) {
      this.unmapAll();
      throw e;
    }
  }

  startQueue(index: number, spec: QueueSpec): WorkerQueue {
    if (!this.mem) throw new Error(`ring ${index}: no memory table`);
    if (index < 0 || index >= this.queues.length) throw new Error(`ring ${index} out of range`);
    const wq = new WorkerQueue(index, spec, this.mem);
    this.queues[index] = wq;
    return wq;
  }

  stopQueue(index: number): number {
    const wq = this.queues[index];
    if (!wq) return 0;
    wq.q.flushUsed();
    this.queues[index] = null;
    return wq.q.getBase();
  }

  /** Queue pairs whose RX queue runs and is enabled: where frames for this guest may go. */
  rxQueue(pair: number): WorkerQueue | null {
    const n = this.queuePairs;
    for (let i = 0; i < n; i++) {
      const q = this.queues[((pair + i) % n) * 2];
      if (q && q.enabled && !q.q.broken) return q;
    }
    return null;
  }

  collectStats(): PortStats {
    let bad = 0;
    let broken = 0;
    for (const q of this.queues) {
      if (!q) continue;
      bad += q.q.badChains;
      if (q.q.broken) broken++;
    }
    this.stats.badChains = bad;
    this.stats.brokenQueues = broken;
    return this.stats;
  }

  private unmapAll(): void {
    this.mem = null;
    for (const m of this.mappings) unmap(m);
    this.mappings = [];
  }

  reset(): void {
    this.queues.fill(null);
    this.unmapAll();
  }
}
