// A port as the data-path worker sees it: its guest memory (mapped by this
// thread from the fds the control plane received), its started queues, and
// counters. Views of guest memory are dropped before munmap: touching one
// afterwards would be a SIGSEGV, not an exception.
import { fstatSync } from 'node:fs';
import { mapShared, unmap, type Mapping } from '../../sys/mmap.js';
import { DirtyLog, GuestMemory, SplitQueue, type MemoryRegion } from '../virtq/index.js';
import { zeroStats, type LogSpec, type PortStats, type QueueSpec, type RegionSpec } from './api.js';
import { Decision } from './decision.js';

// 2 GiB: a multiple of every page size (4 KiB, 2 MiB, 1 GiB huge pages) and,
// with the in-page skew, always under the 4 GiB a view may span.
export const CHUNK = 2 ** 31;

export class WorkerQueue {
  readonly q: SplitQueue;
  enabled: boolean;
  callFd: number;
  /** RX ring written in the current batch, not yet published (SwitchCore.flush). */
  dirty = false;
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
  /** Points the ring at the port's dirty log when LOG_ALL is on (null: logging off). */
  useLog(log: DirtyLog | null): void {
    this.q.log = this.spec.logAll && this.spec.logUsedGpa >= 0 ? log : null;
    this.q.logUsedGpa = this.spec.logUsedGpa;
  }
  get isRx(): boolean { return (this.index & 1) === 0; }
  get kickFd(): number { return this.spec.kickFd; }
}

export class WorkerPort {
  mem: GuestMemory | null = null;
  private mappings: Mapping[] = [];
  private log: DirtyLog | null = null;
  private logMapping: Mapping | null = null;
  readonly queues: (WorkerQueue | null)[];
  /** Bad chains of queues since stopped (a restart must not erase the evidence). */
  private pastBadChains = 0;
  /** The switch's last decision for frames from this port (switch-core.ts). */
  readonly decision = new Decision<WorkerPort>();
  readonly stats: PortStats = zeroStats();
  /** Offloads negotiated (CAN_* bits, switch/offload.ts): on frames it sends, on frames it takes. */
  sendOffloads = 0;
  recvOffloads = 0;

  constructor(readonly id: number, readonly queuePairs: number) {
    this.queues = new Array<WorkerQueue | null>(queuePairs * 2).fill(null);
  }

  setMemory(regions: RegionSpec[]): void {
    // The control plane stops every running ring before a new table arrives.
    for (const q of this.queues) if (q) this.pastBadChains += q.q.badChains;
    this.queues.fill(null);
    this.unmapAll();
    const mapped: MemoryRegion[] = [];
    try {
      for (const r of regions) {
        const st = fstatSync(r.fd);
        // Only files (memfd, shm, hugetlbfs) back guest RAM. Every byte of the
        // region must exist in the file: touching a mapping past EOF is a
        // SIGBUS, which would kill the process, not just this connection.
        if (!st.isFile()) throw new Error(`memory region fd ${r.fd} is not a file (memfd, shm or hugetlbfs)`);
        if (r.mmapOffset + r.size > st.size) throw new Error(`memory region [${r.mmapOffset}, +${r.size}) extends past the end of its file (${st.size} bytes)`);
        // hugetlbfs only maps whole huge pages; st_blksize is the page size there.
        const page = Math.max(4096, st.blksize || 4096);
        // koffi (and Node 20 typed arrays) cannot view more than 4 GiB at once:
        // a big region becomes adjacent views of at most CHUNK bytes, each its
        // own mapping from its own file offset (a high region at mmap_offset
        // 2 GiB never turns into one 6 GiB mapping). Buffers crossing a view
        // boundary are split by the chain walker.
        for (let done = 0; done < r.size;) {
          const size = Math.min(CHUNK, r.size - done);
          const fileOff = r.mmapOffset + done;
          const start = Math.floor(fileOff / page) * page;
          const skew = fileOff - start;
          const m = mapShared(r.fd, Math.ceil((skew + size) / page) * page, start);
          this.mappings.push(m);
          mapped.push({ guestPhysAddr: r.guestPhysAddr + done, size, userAddr: r.userAddr + done, bytes: new Uint8Array(m.buffer, skew, size) });
          done += size;
        }
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
    wq.useLog(this.log);
    // Features are per device: every ring's spec carries the same bits.
    this.sendOffloads = spec.sendOffloads;
    this.recvOffloads = spec.recvOffloads;
    this.queues[index] = wq;
    return wq;
  }

  /** SET_LOG_BASE: maps the new log, moves running rings to it, unmaps the old one. */
  setLog(spec: LogSpec): void {
    const st = fstatSync(spec.fd);
    if (!st.isFile()) throw new Error('dirty log fd is not a file');
    // As for guest memory: touching a mapping past the file's end is a SIGBUS.
    if (spec.offset + spec.size > st.size) throw new Error(`dirty log [${spec.offset}, +${spec.size}) extends past the end of its file (${st.size} bytes)`);
    const start = Math.floor(spec.offset / 4096) * 4096;
    const skew = spec.offset - start;
    const m = mapShared(spec.fd, Math.ceil((skew + spec.size) / 4096) * 4096, start);
    this.dropLog();
    this.log = new DirtyLog(new Uint8Array(m.buffer, skew, spec.size));
    this.logMapping = m;
    for (const q of this.queues) q?.useLog(this.log);
  }

  private dropLog(): void {
    this.log = null;
    for (const q of this.queues) q?.useLog(null);
    if (this.logMapping) unmap(this.logMapping);
    this.logMapping = null;
  }

  stopQueue(index: number): number {
    const wq = this.queues[index];
    if (!wq) return 0;
    wq.q.flushUsed();
    this.pastBadChains += wq.q.badChains;
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
    let bad = this.pastBadChains;
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
    for (const q of this.queues) if (q) this.pastBadChains += q.q.badChains;
    this.queues.fill(null);
    this.unmapAll();
    this.dropLog();
  }
}
