// The vhost-user control plane (VhostUserNetDevice + Connection) driven
// in-process over a socketpair by our own front-end. The data path is a
// recording PortDataplane: the control plane's contract is exactly which of
// its methods it calls, with what, and in which order, so that is what these
// tests look at. Each session ends with the front-end closing and
// `conn.done`, so the device has released everything before the next test.
import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import { openSync } from 'node:fs';
import { describe, it } from 'node:test';
import { closeFd } from '../../../../src/sys/libc.js';
import { socketPair } from '../../../../src/sys/unix-fd.js';
import { zeroStats, type LogSpec, type PortDataplane, type PortStats, type QueueSpec, type RegionSpec } from '../../../../src/vhost-user/dataplane/api.js';
import { Connection } from '../../../../src/vhost-user/device/connection.js';
import { VhostUserNetDevice } from '../../../../src/vhost-user/device/device.js';
import * as F from '../../../lib/frontend-codec.js';
import { Feature, featureBit, hasFeature, ProtoFeature, Req } from '../../../../src/vhost-user/protocol/index.js';
import {
  DEFAULT_PROTOCOL_FEATURES, fdCount, fdList, fdOpen, GuestRing, makeEventfd, memfdCreate, pipe, VhostFrontend,
} from '../../../lib/vhost-frontend.js';

// ---- the recording data path --------------------------------------------

type Call =
  | { op: 'setMemory'; regions: RegionSpec[]; fdsOpen: boolean }
  | { op: 'startQueue'; q: number; spec: QueueSpec }
  | { op: 'stopQueue'; q: number; base: number }
  | { op: 'setCall'; q: number; fd: number }
  | { op: 'setEnabled'; q: number; enabled: boolean }
  | { op: 'inject'; frame: Uint8Array }
  | { op: 'setLog'; size: number; offset: number; fdOpen: boolean }
  | { op: 'reset' };

class RecordingDataplane implements PortDataplane {
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

interface Session {
  fe: VhostFrontend;
  dp: RecordingDataplane;
  dev: VhostUserNetDevice;
  conn: Connection;
  logs: string[];
  /** Front-end hangs up; resolves once the device released everything. */
  end(): Promise<string>;
}

function session(queuePairs = 1, offloads?: boolean): Session {
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
async function negotiated(fe: VhostFrontend, protocolFeatures = DEFAULT_PROTOCOL_FEATURES): Promise<void> {
  fe.prepareGuest();
  await fe.set(Req.SET_OWNER);
  await fe.negotiateProtocol({ protocolFeatures });
  await fe.setFeatures();
}

/** The state a data path ends up with: running rings, fd numbers reduced to "has one". */
function effective(dp: RecordingDataplane): Record<number, unknown> {
  const out: Record<number, unknown> = {};
  for (const [q, s] of [...dp.running].sort((x, y) => x[0] - y[0])) {
    const { kickFd, callFd, ...rest } = s;
    out[q] = { ...rest, kick: kickFd >= 0, call: callFd >= 0 };
  }
  return out;
}

async function withSession<T>(fn: (s: Session) => Promise<T>, queuePairs = 1, offloads?: boolean): Promise<T> {
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

// ---- tests ----------------------------------------------------------------

describe('vhost-user device: replies', () => {
  it('GET_FEATURES offers what a virtio-net front-end needs; GET_QUEUE_NUM counts queue pairs', async () => {
    for (const pairs of [1, 2, 4]) {
      await withSession(async ({ fe }) => {
        const f = await fe.callU64(Req.GET_FEATURES);
        for (const bit of [Feature.VERSION_1, Feature.MRG_RXBUF, Feature.EVENT_IDX, Feature.INDIRECT_DESC, Feature.PROTOCOL_FEATURES]) {
          assert.ok(hasFeature(f, bit), `feature bit ${bit} offered (0x${f.toString(16)})`);
        }
        assert.ok(hasFeature(f, Feature.LOG_ALL), 'LOG_ALL: live migration with dirty logging');
        // Not implemented, so never offered.
        for (const bit of [Feature.RING_PACKED, Feature.IN_ORDER, Feature.ACCESS_PLATFORM]) assert.ok(!hasFeature(f, bit), `bit ${bit}`);
        assert.equal(hasFeature(f, Feature.MQ), pairs > 1, 'MQ only with several queue pairs');
        const p = await fe.callU64(Req.GET_PROTOCOL_FEATURES);
        for (const bit of [ProtoFeature.MQ, ProtoFeature.REPLY_ACK]) assert.ok(hasFeature(p, bit));
        assert.equal(p >> 17n, 0n, 'nothing at protocol bit 17 or above');
        assert.equal(await fe.callU64(Req.GET_QUEUE_NUM), BigInt(pairs));
        assert.equal(await fe.callU64(Req.GET_MAX_MEM_SLOTS), 32n);
        // NEED_REPLY on a request that has a reply of its own: that reply, nothing more.
        assert.ok(fe.request(Req.GET_QUEUE_NUM, undefined, [], true));
        assert.equal(F.replyU64(await fe.expectReply(Req.GET_QUEUE_NUM)), BigInt(pairs));
        assert.equal(await fe.callU64(Req.GET_FEATURES), f, 'no stray ack was queued in between');
      }, pairs);
    }
  });

  it('offers checksum, TSO and ECN offloads both ways unless turned off; UFO/USO never', async () => {
    const offload = [Feature.CSUM, Feature.GUEST_CSUM, Feature.HOST_TSO4, Feature.HOST_TSO6, Feature.HOST_ECN, Feature.GUEST_TSO4, Feature.GUEST_TSO6, Feature.GUEST_ECN];
    await withSession(async ({ fe }) => {
      const f = await fe.callU64(Req.GET_FEATURES);
      for (const bit of offload) assert.ok(hasFeature(f, bit), `offload bit ${bit} offered`);
      for (const bit of [Feature.HOST_UFO, Feature.GUEST_UFO]) assert.ok(!hasFeature(f, bit), `bit ${bit} not offered`);
    });
    await withSession(async ({ fe }) => {
      const f = await fe.callU64(Req.GET_FEATURES);
      for (const bit of offload) assert.ok(!hasFeature(f, bit), `offload bit ${bit} not offered with offloads off`);
      await fe.set(Req.SET_OWNER);
      await fe.negotiateProtocol({ protocolFeatures: DEFAULT_PROTOCOL_FEATURES });
      assert.notEqual(await fe.ack(Req.SET_FEATURES, F.u64(f | featureBit(Feature.CSUM))), 0n, 'CSUM acked though not offered');
    }, 1, false);
  });

  it('GET_STATUS returns what SET_STATUS stored; GET_CONFIG fails with an empty reply', async () => {
    await withSession(async ({ fe }) => {
      await negotiated(fe);
      await fe.set(Req.SET_STATUS, F.u64(0xbn));
      assert.equal(await fe.callU64(Req.GET_STATUS), 0xbn);
      const cfg = await fe.call(Req.GET_CONFIG, F.configMsg(0, 0, 8));
      assert.equal(cfg.payload.length, 0);
    });
  });
});

describe('vhost-user device: REPLY_ACK', () => {
  it('acks 0 for what it did and non-zero for what it refused, and stays connected', async () => {
    await withSession(async ({ fe, dev }) => {
      await negotiated(fe);
      assert.ok(fe.replyAck);
      assert.equal(await fe.ack(Req.SET_OWNER), 0n);
      assert.equal(await fe.ack(Req.NET_SET_MTU, F.u64(1500n)), 0n);
      assert.equal(dev.mtu, 1500);
      assert.notEqual(await fe.ack(Req.NET_SET_MTU, F.u64(10n)), 0n, 'MTU 10 is below the Ethernet minimum');
      assert.notEqual(await fe.ack(Req.NET_SET_MTU, F.u64(1n << 40n)), 0n);
      assert.equal(dev.mtu, 1500, 'a refused MTU changes nothing');
      assert.notEqual(await fe.ack(Req.SET_VRING_NUM, F.vringState(7, 256)), 0n, 'ring 7 does not exist with one queue pair');
      assert.notEqual(await fe.ack(Req.SET_VRING_ENABLE, F.vringState(2, 1)), 0n);
      assert.notEqual(await fe.ack(Req.GET_VRING_BASE, F.vringState(5, 0)).catch(() => 1n), 0n);
      for (const num of [0, 3, 65536, 1 << 20]) {
        assert.notEqual(await fe.ack(Req.SET_VRING_NUM, F.vringState(0, num)), 0n, `ring size ${num}`);
      }
      assert.equal(await fe.ack(Req.SET_VRING_NUM, F.vringState(0, 32768)), 0n);
      assert.notEqual(await fe.ack(Req.SET_VRING_BASE, F.vringState(0, 0x10000)), 0n, 'base is a 16-bit index');
      assert.notEqual(await fe.ack(Req.SET_FEATURES, F.u64(featureBit(Feature.RING_PACKED))), 0n, 'never offered');
      assert.notEqual(await fe.ack(Req.SET_VRING_ENDIAN, F.vringState(0, 1)), 0n, 'big-endian rings');
      const ev = makeEventfd();
      try {
        assert.notEqual(await fe.ack(Req.SET_VRING_CALL, F.vringFdMsg(9, false), [ev]), 0n);
      } finally {
        closeFd(ev);
      }
      assert.equal(await fe.callU64(Req.GET_QUEUE_NUM), 1n, 'still connected');
    });
  });

  it('without REPLY_ACK negotiated, NEED_REPLY gets no ack and a refusal closes the connection', async () => {
    await withSession(async (s) => {
      await negotiated(s.fe, 0n);
      assert.ok(!s.fe.replyAck);
      assert.ok(s.fe.request(Req.SET_OWNER, undefined, [], true));
      // The next reply is the GET_FEATURES one: no ack was sent for SET_OWNER.
      await s.fe.call(Req.GET_FEATURES);
      assert.ok(s.fe.request(Req.NET_SET_MTU, F.u64(10n), [], true));
      await s.fe.expectClosed();
      assert.match(await s.conn.done, /NET_SET_MTU/);
    });
  });

  it('an unknown request: failure ack with REPLY_ACK, closed connection without', async () => {
    await withSession(async (s) => {
      await negotiated(s.fe);
      const ev = makeEventfd();
      try {
        assert.notEqual(await s.fe.ack(200, new Uint8Array(8), [ev]), 0n);
        assert.notEqual(await s.fe.ack(Req.SET_INFLIGHT_FD, new Uint8Array(24), [ev]), 0n, 'INFLIGHT_SHMFD is not offered');
      } finally {
        closeFd(ev);
      }
      assert.equal(await s.fe.callU64(Req.GET_QUEUE_NUM), 1n);
      assert.ok(s.fe.request(200, new Uint8Array(4)));
      await s.fe.expectClosed();
      assert.match(await s.conn.done, /200/);
    });
  });

  it('malformed messages close the connection without a reply, even with NEED_REPLY', async () => {
    const cases: [string, (fe: VhostFrontend) => void][] = [
      ['version 2', (fe) => fe.send(Uint8Array.from([1, 0, 0, 0, 0x0a, 0, 0, 0, 0, 0, 0, 0]))],
      ['REPLY flag on a request', (fe) => fe.send(Uint8Array.from([1, 0, 0, 0, 0x0d, 0, 0, 0, 0, 0, 0, 0]))],
      ['undefined flag bits', (fe) => fe.send(Uint8Array.from([1, 0, 0, 0, 0x19, 0, 0, 0, 0, 0, 0, 0]))],
      ['size above the cap', (fe) => fe.send(Uint8Array.from([5, 0, 0, 0, 0x09, 0, 0, 0, 0, 0x10, 0, 0]))],
      ['SET_FEATURES with 4 bytes', (fe) => fe.request(Req.SET_FEATURES, new Uint8Array(4), [], true)],
      ['GET_FEATURES carrying an fd', (fe) => fe.request(Req.GET_FEATURES, undefined, [fe.guest!.fd], true)],
      ['SET_VRING_KICK without fd nor NOFD', (fe) => fe.request(Req.SET_VRING_KICK, F.vringFdMsg(0, false), [], true)],
      ['SET_VRING_KICK with NOFD and an fd', (fe) => fe.request(Req.SET_VRING_KICK, F.vringFdMsg(0, true), [fe.rx.kickFd], true)],
      ['SET_MEM_TABLE with 2 regions, 1 fd', (fe) => fe.request(Req.SET_MEM_TABLE, F.memTable([...fe.guest!.regions(), ...fe.guest!.regions()]), [fe.guest!.fd], true)],
      ['SET_MEM_TABLE with 0 regions', (fe) => fe.request(Req.SET_MEM_TABLE, F.memTable([]), [], true)],
      ['9 fds on one message', (fe) => fe.request(Req.SET_VRING_CALL, F.vringFdMsg(0, false), new Array<number>(9).fill(fe.rx.callFd), true)],
      ['desc not 16-byte aligned', (fe) => fe.request(Req.SET_VRING_ADDR, F.vringAddr({ ...fe.rx.addr(), desc: fe.rx.addr().desc + 8n }), [], true)],
    ];
    for (const [name, send] of cases) {
      await withSession(async (s) => {
        await negotiated(s.fe);
        send(s.fe);
        await assert.doesNotReject(s.fe.expectClosed(), name);
        assert.match(await s.conn.done, /protocol error/, name);
      });
    }
  });
});

describe('vhost-user device: ring life cycle', () => {
  it('QEMU order (ENABLE before the memory table) and DPDK order start the same rings', async () => {
    const states = [];
    for (const order of ['qemu', 'dpdk'] as const) {
      states.push(await withSession(async (s) => {
        await s.fe.handshake({ order, postRx: false });
        assert.deepEqual([...s.dp.running.keys()].sort(), [0, 1], order);
        if (order === 'qemu') {
          // Enabled before anything else existed: the rings start enabled.
          for (const st of s.dp.starts()) assert.equal(st.spec.enabled, true);
        } else {
          // DPDK enables after the start: the data path is told so.
          assert.deepEqual(s.dp.ops(['setEnabled']), ['setEnabled 0', 'setEnabled 1']);
        }
        for (const st of s.dp.starts()) {
          const r = s.fe.rings[st.q]!;
          assert.deepEqual([st.spec.desc, st.spec.avail, st.spec.used], [r.q.descUA, r.q.availUA, r.q.usedUA]);
          assert.equal(st.spec.size, 256);
        }
        return effective(s.dp);
      }));
    }
    assert.deepEqual(states[0], states[1]);
    assert.deepEqual(states[0]![1], {
      size: 256, desc: 0x7f12_3401_0000, avail: 0x7f12_3401_1000, used: 0x7f12_3401_2000, lastAvail: 0,
      eventIdx: true, indirect: true, mrgRxbuf: true, hdrLen: 12, enabled: true, kick: true, call: true, logAll: false, logUsedGpa: -1, sendOffloads: 0, recvOffloads: 0,
    });
  });

  // Each of num, addr, kick, memory can come last; the ring must start
  // exactly when the last of the four arrives.
  type Item = 'num' | 'addr' | 'kick' | 'mem';
  const send = async (fe: VhostFrontend, r: GuestRing, item: Item): Promise<void> => {
    if (item === 'num') await fe.set(Req.SET_VRING_NUM, F.vringState(r.index, r.size));
    else if (item === 'addr') await fe.set(Req.SET_VRING_ADDR, F.vringAddr(r.addr()));
    else if (item === 'kick') await fe.set(Req.SET_VRING_KICK, F.vringFdMsg(r.index, false), [r.kickFd]);
    else await fe.sendMemTable();
  };
  const perms = (xs: Item[]): Item[][] => (xs.length <= 1 ? [xs] : xs.flatMap((x, i) => perms([...xs.slice(0, i), ...xs.slice(i + 1)]).map((p) => [x, ...p])));
  const checkOrder = async (order: Item[]): Promise<void> => {
    await withSession(async (s) => {
      await negotiated(s.fe);
      const r = s.fe.tx;
      for (const [k, item] of order.entries()) {
        assert.equal(s.dp.starts().length, 0, `${order.join(',')}: started before ${item}`);
        await send(s.fe, r, item);
        if (k < 3) assert.ok(!s.dp.running.has(1), `${order.join(',')}: ring running without all four`);
      }
      assert.deepEqual(s.dp.starts().map((x) => x.q), [1], `${order.join(',')}: ring 1 started once`);
      assert.ok(!s.dp.running.has(0), 'ring 0 was never set up');
    });
  };
  const all = perms(['num', 'addr', 'kick', 'mem']);

  // All 24 orders. Regression (fixed in b0919c4): SET_VRING_NUM last never
  // started the ring.
  it('a ring starts only once num, addr, kick and memory are all there, in any of the 24 orders', async () => {
    for (const order of all) await checkOrder(order);
  });

  // Regression (fixed in b0919c4): a NOFD kick only counted while it was the
  // message being handled.
  it('a NOFD kick before the memory table still starts the ring once the table arrives', async () => {
    await withSession(async (s) => {
      await negotiated(s.fe);
      const r = s.fe.tx;
      await s.fe.set(Req.SET_VRING_NUM, F.vringState(1, 256));
      await s.fe.set(Req.SET_VRING_ADDR, F.vringAddr(r.addr()));
      await s.fe.set(Req.SET_VRING_KICK, F.vringFdMsg(1, true));
      await s.fe.sendMemTable();
      assert.ok(s.dp.running.has(1));
    });
  });

  it('a NOFD kick starts the ring with no kick fd (polled)', async () => {
    await withSession(async (s) => {
      await negotiated(s.fe);
      await s.fe.sendMemTable();
      await s.fe.set(Req.SET_VRING_NUM, F.vringState(1, 256));
      await s.fe.set(Req.SET_VRING_ADDR, F.vringAddr(s.fe.tx.addr()));
      await s.fe.set(Req.SET_VRING_KICK, F.vringFdMsg(1, true));
      assert.equal(s.dp.running.get(1)?.kickFd, -1);
    });
  });

  it('ring addresses outside the memory table are refused, the ring stays stopped', async () => {
    await withSession(async (s) => {
      await negotiated(s.fe);
      await s.fe.sendMemTable();
      const r = s.fe.tx;
      await s.fe.set(Req.SET_VRING_NUM, F.vringState(1, 256));
      const end = BigInt(s.fe.guest!.uaBase + s.fe.guest!.size);
      // used ring straddling the end of the region, then wholly outside.
      // Refused at the kick, or (once a kick fd is stored) at the address itself.
      for (const used of [end - 64n, end + 0x1000n, 0x10n]) {
        const a = await s.fe.ack(Req.SET_VRING_ADDR, F.vringAddr({ ...r.addr(), used }));
        const k = await s.fe.ack(Req.SET_VRING_KICK, F.vringFdMsg(1, false), [r.kickFd]);
        assert.ok(a !== 0n || k !== 0n, `used ring at 0x${used.toString(16)} accepted`);
        assert.equal(s.dp.running.size, 0);
      }
      // 2^53 and above cannot be represented exactly: refused outright.
      assert.notEqual(await s.fe.ack(Req.SET_VRING_ADDR, F.vringAddr({ ...r.addr(), avail: 1n << 60n })), 0n);
      assert.equal(await s.fe.callU64(Req.GET_QUEUE_NUM), 1n);
    });
  });

  it('GET_VRING_BASE stops the ring and returns where the data path got to; a new kick resumes there', async () => {
    await withSession(async (s) => {
      await s.fe.handshake({ postRx: false });
      // Not started yet: the value SET_VRING_BASE stored.
      s.dp.progress.set(1, 1234);
      s.dp.clear();
      assert.equal(await s.fe.getVringBase(1), 1234);
      assert.deepEqual(s.dp.ops(['stopQueue', 'startQueue']), ['stopQueue 1']);
      assert.ok(!s.dp.running.has(1));
      assert.ok(s.dp.running.has(0), 'the other ring keeps running');
      // Stopped: asking again does not touch the data path.
      assert.equal(await s.fe.getVringBase(1), 1234);
      assert.deepEqual(s.dp.ops(['stopQueue']), ['stopQueue 1']);
      await s.fe.set(Req.SET_VRING_KICK, F.vringFdMsg(1, false), [s.fe.tx.kickFd]);
      assert.equal(s.dp.running.get(1)?.lastAvail, 1234, 'restarted where it stopped');
      // SET_VRING_BASE while stopped wins.
      await s.fe.getVringBase(1);
      await s.fe.set(Req.SET_VRING_BASE, F.vringState(1, 7));
      await s.fe.set(Req.SET_VRING_KICK, F.vringFdMsg(1, false), [s.fe.tx.kickFd]);
      assert.equal(s.dp.running.get(1)?.lastAvail, 7);
      // ... and is refused while running.
      assert.notEqual(await s.fe.ack(Req.SET_VRING_BASE, F.vringState(1, 9)), 0n);
      assert.notEqual(await s.fe.ack(Req.SET_VRING_NUM, F.vringState(1, 512)), 0n);
    });
  });

  it('SET_MEM_TABLE resent while running restarts the rings at the bases the data path reported', async () => {
    await withSession(async (s) => {
      await s.fe.handshake({ postRx: false });
      const oldFds = s.dp.memory.map((r) => r.fd);
      assert.ok(oldFds.every(fdOpen));
      s.dp.progress.set(0, 77).set(1, 65535);
      s.dp.clear();
      await s.fe.sendMemTable();
      assert.deepEqual(s.dp.ops(), ['stopQueue 0', 'stopQueue 1', 'setMemory', 'startQueue 0', 'startQueue 1']);
      assert.ok(s.dp.calls.some((c) => c.op === 'setMemory' && c.fdsOpen), 'new fds open when handed over');
      assert.deepEqual(s.dp.starts().map((x) => x.spec.lastAvail), [77, 65535]);
      // The old table's fds were released once the data path had remapped
      // (a number may have been reused for the new table's fd: that one is open).
      for (const fd of oldFds) assert.ok(!fdOpen(fd) || s.dp.memory.some((r) => r.fd === fd), `old region fd ${fd} closed`);
    });
  });

  it('a two-region table is passed to the data path as announced', async () => {
    await withSession(async (s) => {
      s.fe.prepareGuest({ memory: { regions: 2, size: 8 << 20 } });
      await negotiated(s.fe);
      await s.fe.sendMemTable();
      const g = s.fe.guest!;
      assert.deepEqual(s.dp.memory.map(({ fd: _fd, ...r }) => r), [
        { guestPhysAddr: g.gpaBase, size: 4 << 20, userAddr: g.uaBase, mmapOffset: 0 },
        { guestPhysAddr: g.gpaBase + (4 << 20), size: 4 << 20, userAddr: g.uaOf(g.gpaBase + (4 << 20)), mmapOffset: 4 << 20 },
      ]);
    });
  });

  it('SET_VRING_CALL on a running ring reaches the data path; ENABLE 0 / 1 toggles it', async () => {
    await withSession(async (s) => {
      await s.fe.handshake({ postRx: false });
      s.dp.clear();
      const ev = makeEventfd();
      try {
        await s.fe.set(Req.SET_VRING_CALL, F.vringFdMsg(0, false), [ev]);
        await s.fe.set(Req.SET_VRING_CALL, F.vringFdMsg(1, true));
        await s.fe.setEnable(s.fe.rx, false);
      } finally {
        closeFd(ev);
      }
      assert.deepEqual(s.dp.ops(), ['setCall 0', 'setCall 1', 'setEnabled 0']);
      assert.equal(s.dp.running.get(1)?.callFd, -1);
      assert.equal(s.dp.running.get(0)?.enabled, false);
    });
  });

  it('SEND_RARP injects an announce from the guest MAC', async () => {
    await withSession(async (s) => {
      await negotiated(s.fe);
      await s.fe.set(Req.SEND_RARP, F.rarp(Uint8Array.from([0x52, 0x54, 0, 1, 2, 3])));
      const inj = s.dp.calls.find((c) => c.op === 'inject');
      assert.ok(inj && inj.op === 'inject');
      assert.equal(Buffer.from(inj.frame.subarray(6, 14)).toString('hex'), '5254000102038035');
    });
  });

  it('closing the connection resets the data path', async () => {
    const s = session();
    await s.fe.handshake({ postRx: false });
    s.dp.clear();
    await s.end();
    assert.deepEqual(s.dp.ops(), ['reset']);
  });
});

describe('vhost-user device: fds', () => {
  it('every fd received is closed, accepted or rejected, once the connection is gone', async () => {
    // Warm-up: lazily opened fds (libuv, koffi) must not count.
    await withSession(async (s) => { await s.fe.handshake({ postRx: false }); });
    const before = fdList('self');
    const devNull = openSync('/dev/null', 'r');
    const [pr, pw] = pipe();
    const mfd = memfdCreate('qnh-unit-extra', 1 << 20);
    const mine = [devNull, pr, pw, mfd];
    try {
      // 1: a full session, then a storm of fd-carrying messages.
      await withSession(async (s) => {
        await s.fe.handshake({ postRx: false });
        const fe = s.fe;
        for (let i = 0; i < 40; i++) {
          await fe.set(Req.SET_VRING_CALL, F.vringFdMsg(i & 1, false), [fe.rings[i & 1]!.callFd]);
          await fe.set(Req.SET_VRING_ERR, F.vringFdMsg(i & 1, false), [fe.rings[i & 1]!.kickFd]);
          // Not an eventfd: accepted or refused (policy), closed either way.
          await fe.ack(Req.SET_VRING_ERR, F.vringFdMsg(i & 1, false), [pw]);
        }
        await fe.set(Req.SET_VRING_KICK, F.vringFdMsg(1, false), [fe.tx.kickFd]);
        await fe.sendMemTable();
        await fe.set(Req.SET_LOG_FD, undefined, [pw]);
        await fe.set(Req.SET_BACKEND_REQ_FD, undefined, [pr]);
        assert.equal(F.replyU64(await fe.call(Req.SET_LOG_BASE, F.logBase(4096n, 0n), [mfd])), 0n);
        const region = { guestPhysAddr: 0x1_0000_0000n, memorySize: 1n << 20n, userspaceAddr: 0x6000_0000_0000n, mmapOffset: 0n };
        await fe.set(Req.ADD_MEM_REG, F.memRegionMsg(region), [mfd]);
        await fe.set(Req.REM_MEM_REG, F.memRegionMsg(region), [mfd]); // old-QEMU style fd: closed unused
        // Refused ones, each carrying fds.
        const overlap = fe.guest!.regions()[0]!;
        assert.notEqual(await fe.ack(Req.SET_MEM_TABLE, F.memTable([overlap, { ...overlap, userspaceAddr: overlap.userspaceAddr + 4096n }]), [mfd, mfd]), 0n);
        assert.notEqual(await fe.ack(Req.ADD_MEM_REG, F.memRegionMsg({ ...overlap, memorySize: overlap.memorySize + 4096n }), [mfd]), 0n);
        assert.notEqual(await fe.ack(Req.SET_VRING_KICK, F.vringFdMsg(200, false), [devNull]), 0n);
        assert.notEqual(await fe.ack(Req.SET_VRING_CALL, F.vringFdMsg(3, false), [devNull]), 0n);
        assert.notEqual(await fe.ack(Req.SET_INFLIGHT_FD, new Uint8Array(24), [mfd]), 0n);
        assert.notEqual(await fe.ack(77, new Uint8Array(3), [pr, pw, mfd]), 0n);
        // Repeated by the next queue pair's vhost_dev (QEMU <= 8.0): accepted, the fds closed all the same.
        assert.equal(await fe.ack(Req.ADD_MEM_REG, F.memRegionMsg({ ...overlap }), [mfd]), 0n, 'the same region again');
        assert.equal(await fe.ack(Req.REM_MEM_REG, F.memRegionMsg(region), [mfd]), 0n, 'no longer there');
        await fe.barrier();
      });
      // 2: protocol errors with fds attached.
      await withSession(async (s) => {
        await negotiated(s.fe);
        s.fe.request(Req.GET_FEATURES, undefined, [pr, pw, mfd]);
        await s.fe.expectClosed();
      });
      await withSession(async (s) => {
        await negotiated(s.fe);
        s.fe.request(Req.SET_VRING_CALL, F.vringFdMsg(0, false), [pr, pw, mfd, devNull, pr, pw, mfd, devNull, pr]);
        await s.fe.expectClosed();
      });
      // 3: a message cut short: its fds arrived with the header, the rest never does.
      await withSession(async (s) => {
        await negotiated(s.fe);
        const whole = F.encodeRequest(Req.SET_MEM_TABLE, F.memTable(s.fe.guest!.regions()));
        s.fe.send(whole.subarray(0, 20), [mfd]);
        assert.equal((await s.fe.next(100)).kind, 'timeout', 'the back-end waits for the rest');
      });
      // 4: more fds queued behind a message that kills the connection.
      await withSession(async (s) => {
        await negotiated(s.fe);
        s.fe.request(Req.SET_FEATURES, new Uint8Array(3));
        for (let i = 0; i < 20; i++) s.fe.request(Req.SET_VRING_CALL, F.vringFdMsg(0, false), [mfd]);
        await s.fe.expectClosed();
      });
    } finally {
      mine.forEach(closeFd);
    }
    const after = fdList('self');
    assert.deepEqual(after, before, 'the same fds are open as before the sessions');
    assert.equal(fdCount('self'), before.length);
  });

  // Regression (fixed in 3941eea): the connection used to close a request's
  // fds on a data path failure although the device had already stored them,
  // and reset() then closed the same numbers again.
  it('fds kept by the device are closed exactly once when the data path fails', async () => {
    for (const failing of ['startQueue', 'setMemory'] as const) {
      const s = session();
      await negotiated(s.fe);
      if (failing === 'startQueue') {
        await s.fe.sendMemTable();
        await s.fe.set(Req.SET_VRING_NUM, F.vringState(1, 256));
        await s.fe.set(Req.SET_VRING_ADDR, F.vringAddr(s.fe.tx.addr()));
        s.dp.failStart = 'ring 1: ring misaligned in host memory';
      } else {
        s.dp.failMemory = 'mmap: ENODEV';
      }
      // While the device releases the connection, something else in the
      // process opens fds: they get the lowest free numbers, i.e. those just
      // closed. A second close of those numbers closes these instead.
      const sentinels: number[] = [];
      s.dp.onReset = () => { for (let i = 0; i < 8; i++) sentinels.push(openSync('/dev/null', 'r')); };
      if (failing === 'startQueue') s.fe.request(Req.SET_VRING_KICK, F.vringFdMsg(1, false), [s.fe.tx.kickFd], true);
      else s.fe.request(Req.SET_MEM_TABLE, F.memTable(s.fe.guest!.regions()), s.fe.guest!.fds(), true);
      await s.fe.expectClosed();
      await s.end();
      const closed = sentinels.filter((fd) => !fdOpen(fd));
      sentinels.forEach(closeFd);
      assert.deepEqual(closed, [], `${failing} failure: fds opened by someone else were closed by the device (${closed.join(', ')})`);
    }
  });
});

describe('vhost-user device: the socket layer under GC pressure', () => {
  // In a child process: the bug corrupts the heap (glibc aborts with
  // "free(): invalid next size"), which must not take this test runner down.
  const probe = `
    import { recvWithFds, sendWithFds, socketPair } from ${JSON.stringify(new URL('../../../../src/sys/unix-fd.js', import.meta.url).href)};
    import { setNonBlocking } from ${JSON.stringify(new URL('../../../../src/sys/unix-socket.js', import.meta.url).href)};
    import { mapShared, unmap } from ${JSON.stringify(new URL('../../../../src/sys/mmap.js', import.meta.url).href)};
    import { memfdCreate } from ${JSON.stringify(new URL('../../../lib/vhost-frontend.js', import.meta.url).href)};
    const [a, b] = socketPair();
    setNonBlocking(a, true); setNonBlocking(b, true);
    const mfd = memfdCreate('qnh-gc', 64 << 20);
    let map = null;
    const rbuf = new Uint8Array(4096);
    for (let i = 0; i < 20000; i++) {
      // Fresh external memory makes V8 collect far more often.
      if (i % 20 === 0) { if (map) unmap(map); map = mapShared(mfd, 64 << 20); }
      const msg = new Uint8Array(20);
      new DataView(msg.buffer).setUint32(0, i, true);
      msg[19] = 0x5a;
      try {
        sendWithFds(a, msg, []);
        rbuf.fill(0, 0, 20);
        const r = recvWithFds(b, rbuf, 0, 20, 0x40);
        if (r.n !== 20 || new DataView(rbuf.buffer).getUint32(0, true) !== i || rbuf[19] !== 0x5a) throw new Error('wrong bytes received');
      } catch (e) {
        console.log('message ' + i + ': ' + e.message);
        process.exit(1);
      }
    }
    console.log('20000 messages intact');
  `;

  // Regression (fixed in dc405cb): msghdr() returned the iovec/control
  // Buffers only in a `keep` array the callers dropped before the syscall; a
  // GC in between freed them, so sendmsg failed with EFAULT or sent garbage
  // and recvmsg wrote into freed memory (glibc then aborted).
  it('sendWithFds/recvWithFds keep their buffers alive across the syscall', () => {
    const r = spawnSync(process.execPath, ['--input-type=module', '-e', probe], { encoding: 'utf8', timeout: 30000 });
    assert.equal(r.status, 0, `${r.stdout}${r.stderr.slice(0, 500)} (signal ${r.signal})`);
  });
});

describe('vhost-user device: seeded random messages', () => {
  it('2000 messages: every one is answered, acked or ends the connection; the test process survives', async () => {
    let seed = 0x9e3779b9;
    const rnd = (n: number): number => {
      seed ^= seed << 13; seed >>>= 0; seed ^= seed >>> 17; seed ^= seed << 5; seed >>>= 0;
      return seed % n;
    };
    const ids = [...Object.values(Req), 0, 26, 41, 99, 0xffffffff];
    const before = fdCount('self');
    const ev = makeEventfd();
    let sent = 0;
    let closes = 0;
    try {
      while (sent < 2000) {
        await withSession(async (s) => {
          if (rnd(2)) await s.fe.handshake({ postRx: false }); else await negotiated(s.fe);
          for (; sent < 2000; sent++) {
            const id = ids[rnd(ids.length)]!;
            const size = [0, 8, 8, 40, 40, 12, 24, rnd(300)][rnd(8)]!;
            const payload = new Uint8Array(size);
            for (let i = 0; i < size; i++) payload[i] = rnd(4) ? rnd(4) : rnd(256);
            const fds = [[], [], [ev], [s.fe.guest!.fd], [ev, ev]][rnd(5)]!;
            s.fe.request(id, payload, fds, rnd(2) === 1);
            // A probe that is not the request just sent: its reply proves
            // everything before it was handled.
            const probe = id === Req.GET_QUEUE_NUM ? Req.GET_FEATURES : Req.GET_QUEUE_NUM;
            if (!s.fe.request(probe)) { closes++; sent++; return; }
            for (;;) {
              const e = await s.fe.next(2000);
              if (e.kind === 'timeout') assert.fail(`message ${sent} (id ${id}, ${size} bytes): no answer and no close`);
              if (e.kind === 'closed') { closes++; sent++; return; }
              if (e.reply.request === probe) break;
            }
          }
        });
      }
    } finally {
      closeFd(ev);
    }
    assert.ok(closes > 10 && closes < 2000, `${closes} connections closed`);
    assert.equal(fdCount('self'), before, 'no fd leaked');
  });
});
