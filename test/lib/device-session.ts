// In-process sessions for the vhost-user device's unit tests: the device and
// its Connection over a socketpair with our front-end, and a data path that
// records which of its methods the control plane calls, with what, in which
// order, and flags contract violations. A session ends with the front-end
// closing and `conn.done`, so the device has released everything.
import assert from 'node:assert/strict';
import { socketPair } from '../../src/sys/unix-fd.js';
import { zeroStats, type LogSpec, type PortDataplane, type PortStats, type QueueSpec, type RegionSpec } from '../../src/vhost-user/dataplane/api.js';
import { Connection } from '../../src/vhost-user/device/connection.js';
import { VhostUserNetDevice } from '../../src/vhost-user/device/device.js';
import { Req } from '../../src/vhost-user/protocol/index.js';
import { DEFAULT_PROTOCOL_FEATURES, fdOpen, VhostFrontend } from './vhost-frontend.js';

// ---- the recording data path --------------------------------------------

export type Call =
  | { op: 'setMemory'; regions: RegionSpec[]; fdsOpen: boolean }
  | { op: 'startQueue'; q: number; spec: QueueSpec }
  | { op: 'stopQueue'; q: number; base: number }
  | { op: 'setCall'; q: number; fd: number }
  | { op: 'setEnabled'; q: number; enabled: boolean }
  | { op: 'inject'; frame: Uint8Array }
  | { op: 'setLog'; size: number; offset: number; fdOpen: boolean }
  | { op: 'reset' };

export class RecordingDataplane implements PortDataplane {
  readonly calls: Call[] = [];
  /** Rings the device believes it started, as the data path would hold them. */
  readonly running = new Map<number, QueueSpec>();
  /** What stopQueue reports for a ring: where the data path got to. Default: the spec's lastAvail. */
  readonly progress = new Map<number, number>();
  memory: RegionSpec[] = [];
  /** Makes the next startQueue / setMemory fail as the worker does (a plain Error). */
  failStart: string | null = null;
  failMemory: string | null = null;
  /** Runs inside reset(), i.e. while the device is releasing a closed connection. */
  onReset: (() => void) | null = null;
  /**
   * Contract violations seen (not thrown: a throw here would just look like a
   * data path failure to the device and close the connection).
   */
  readonly violations: string[] = [];

  async setMemory(regions: RegionSpec[]): Promise<void> {
    // The control plane must hand over fds that are still open (it may close
    // the old table's only after this resolves).
    this.calls.push({ op: 'setMemory', regions: regions.map((r) => ({ ...r })), fdsOpen: regions.every((r) => fdOpen(r.fd)) });
    if (this.failMemory) throw new Error(this.failMemory);
    if (this.running.size) this.violations.push(`setMemory with rings ${[...this.running.keys()].join(',')} running`);
    if (!regions.every((r) => fdOpen(r.fd))) this.violations.push('setMemory with a closed region fd');
    this.memory = regions;
  }
  async startQueue(q: number, spec: QueueSpec): Promise<void> {
    this.calls.push({ op: 'startQueue', q, spec: { ...spec } });
    if (this.failStart) throw new Error(this.failStart);
    if (this.running.has(q)) this.violations.push(`ring ${q} started twice`);
    if (this.memory.length === 0) this.violations.push(`ring ${q} started without a memory table`);
    if (spec.kickFd >= 0 && !fdOpen(spec.kickFd)) this.violations.push(`ring ${q} started with a closed kick fd`);
    this.running.set(q, { ...spec });
  }
  async stopQueue(q: number): Promise<number> {
    const spec = this.running.get(q);
    const base = this.progress.get(q) ?? spec?.lastAvail ?? 0;
    this.calls.push({ op: 'stopQueue', q, base });
    this.running.delete(q);
    return base;
  }
  async setLog(log: LogSpec): Promise<void> {
    this.calls.push({ op: 'setLog', size: log.size, offset: log.offset, fdOpen: fdOpen(log.fd) });
  }
  async setCall(q: number, fd: number): Promise<void> {
    this.calls.push({ op: 'setCall', q, fd });
    const s = this.running.get(q);
    if (s) s.callFd = fd;
  }
  async setEnabled(q: number, enabled: boolean): Promise<void> {
    this.calls.push({ op: 'setEnabled', q, enabled });
    const s = this.running.get(q);
    if (s) s.enabled = enabled;
  }
  async injectFromGuest(frame: Uint8Array): Promise<void> {
    this.calls.push({ op: 'inject', frame: frame.slice() });
  }
  async reset(): Promise<void> {
    this.calls.push({ op: 'reset' });
    this.running.clear();
    this.memory = [];
    this.onReset?.();
  }
  stats(): PortStats {
    return zeroStats();
  }

  ops(filter?: Call['op'][]): string[] {
    return this.calls.filter((c) => !filter || filter.includes(c.op)).map((c) => ('q' in c ? `${c.op} ${c.q}` : c.op));
  }
  starts(): { q: number; spec: QueueSpec }[] {
    return this.calls.flatMap((c) => (c.op === 'startQueue' ? [{ q: c.q, spec: c.spec }] : []));
  }
  clear(): void {
    this.calls.length = 0;
  }
}

// ---- sessions -----------------------------------------------------------

export interface Session {
  fe: VhostFrontend;
  dp: RecordingDataplane;
  dev: VhostUserNetDevice;
  conn: Connection;
  logs: string[];
  /** Front-end hangs up; resolves once the device released everything. */
  end(): Promise<string>;
}

export function session(queuePairs = 1, offloads?: boolean): Session {
  const [a, b] = socketPair();
  const dp = new RecordingDataplane();
  const dev = new VhostUserNetDevice(dp, { queuePairs, ...(offloads === undefined ? {} : { offloads }) });
  const logs: string[] = [];
  const conn = new Connection(b, dev, (m) => logs.push(m));
  conn.start();
  const fe = new VhostFrontend(a);
  return {
    fe, dp, dev, conn, logs,
    async end() {
      fe.close();
      return conn.done;
    },
  };
}

/** SET_OWNER, features and protocol features (REPLY_ACK unless told otherwise); guest memory and rings prepared. */
export async function negotiated(fe: VhostFrontend, protocolFeatures = DEFAULT_PROTOCOL_FEATURES): Promise<void> {
  fe.prepareGuest();
  await fe.set(Req.SET_OWNER);
  await fe.negotiateProtocol({ protocolFeatures });
  await fe.setFeatures();
}

/** The state a data path ends up with: running rings, fd numbers reduced to "has one". */
export function effective(dp: RecordingDataplane): Record<number, unknown> {
  const out: Record<number, unknown> = {};
  for (const [q, s] of [...dp.running].sort((x, y) => x[0] - y[0])) {
    const { kickFd, callFd, ...rest } = s;
    out[q] = { ...rest, kick: kickFd >= 0, call: callFd >= 0 };
  }
  return out;
}

export async function withSession<T>(fn: (s: Session) => Promise<T>, queuePairs = 1, offloads?: boolean): Promise<T> {
  const s = session(queuePairs, offloads);
  let r: T;
  try {
    r = await fn(s);
  } finally {
    await s.end();
  }
  assert.deepEqual(s.dp.violations, [], 'data path contract');
  return r;
}
