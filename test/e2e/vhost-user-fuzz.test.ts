// Hostile front-ends against the real `vhost-user serve` process. One process
// serves two patched sockets: port 0 has a well-behaved front-end (ours) for
// the whole test, port 1 gets the hostile one. The back-end must survive
// (exit code, /proc), count what it rejected (badChains, brokenQueues), keep
// serving port 0 without ever dropping its connection, release every fd and
// mapping the hostile peer gave it, and accept a well-behaved front-end on
// port 1 afterwards, with traffic flowing both ways again.
//
// Inputs that used to take the back-end down or freeze its data path have
// their own tests at the end, each in its own process; one still does (a
// `todo`), and the random fuzzing steers clear of exactly that one.
import assert from 'node:assert/strict';
import { mkdtempSync, openSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, before, describe, it, type TestContext } from 'node:test';
import { closeFd } from '../../src/sys/libc.js';
import { socketPair } from '../../src/sys/unix-fd.js';
import { setNonBlocking } from '../../src/sys/unix-socket.js';
import * as F from '../lib/frontend-codec.js';
import { Feature, featureBit, HdrFlag, MAX_PAYLOAD_SIZE, Req, type MemRegion } from '../../src/vhost-user/protocol/index.js';
import { VIRTQ_DESC_F_INDIRECT as IND, VIRTQ_DESC_F_NEXT as NEXT, VIRTQ_DESC_F_WRITE as WRITE } from '../lib/mock-driver.js';
import { Serve, statsLinesOf, type PortStatsLine } from '../lib/serve.js';
import {
  eventfdAdd, fdCount, fdList, frameSeq, type GuestMemfd, LAYOUT, makeEventfd, mappingsOf, memfdCreate,
  NET_HDR, pipe, processAlive, sleep, testFrame, VhostFrontend,
} from '../lib/vhost-frontend.js';

type Poll = 'event' | 'busy';

/** QNH_FUZZ_VERBOSE=1: print each control case's outcome and why fuzz connections were closed. */
const VERBOSE = Boolean(process.env.QNH_FUZZ_VERBOSE);
/** QNH_FUZZ_SEED=N explores (or replays) another message sequence. */
const SEED = Number(process.env.QNH_FUZZ_SEED ?? 0x5eed1234) >>> 0;

// Each Serve adds a process 'exit' listener; this file starts more than ten.
process.setMaxListeners(40);

// ---- the back-end process and its well-behaved port ------------------------

class Bench {
  readonly a: string;
  readonly b: string;
  readonly s: Serve;
  good!: VhostFrontend;
  /** fds of the back-end with only port 0 connected. */
  baseFds: string[] = [];

  constructor(dir: string, name: string, readonly poll: Poll) {
    this.a = join(dir, `${name}-a.sock`);
    this.b = join(dir, `${name}-b.sock`);
    this.s = new Serve(['--socket', this.a, '--socket', this.b, '--poll', poll, '--stats-interval', '1']);
  }

  static async start(dir: string, name: string, poll: Poll): Promise<Bench> {
    const bench = new Bench(dir, name, poll);
    await bench.s.ready([bench.a, bench.b]);
    bench.good = VhostFrontend.connect(bench.a);
    await bench.good.handshake({ memory: { name: 'qnh-good' } });
    bench.baseFds = fdList(bench.pid);
    return bench;
  }

  get pid(): number { return this.s.proc.pid!; }

  alive(): boolean { return this.s.proc.exitCode === null && this.s.proc.signalCode === null && processAlive(this.pid); }

  assertAlive(what: string): void {
    assert.ok(this.alive(), `back-end died (${what}): exit ${this.s.proc.exitCode} signal ${this.s.proc.signalCode}\n${this.s.log().slice(-2000)}`);
  }

  /** Ports 0 and 1's stats lines printed after this call (the process prints them every second). */
  async stats(): Promise<PortStatsLine[]> {
    const seen = statsLinesOf(this.s.log()).length;
    const deadline = Date.now() + 3000;
    for (;;) {
      const fresh = statsLinesOf(this.s.log()).slice(seen);
      const i = fresh.findIndex((l) => l.port === 0);
      const j = fresh.findIndex((l, k) => k > i && l.port === 1);
      if (i >= 0 && j >= 0) return [fresh[i]!, fresh[j]!] as unknown as PortStatsLine[];
      if (Date.now() > deadline || !this.alive()) throw new Error(`no stats line from the back-end\n${this.s.log().slice(-1000)}`);
      await sleep(50);
    }
  }

  /** Waits until the back-end holds exactly the fds it held with only port 0 connected. */
  async assertReleased(memfdName: string): Promise<void> {
    const deadline = Date.now() + 3000;
    let now = fdList(this.pid);
    while (now.length !== this.baseFds.length && Date.now() < deadline) {
      await sleep(20);
      now = fdList(this.pid);
    }
    assert.deepEqual(now.sort(), [...this.baseFds].sort(), 'back-end fds back to the port-0-only set');
    assert.deepEqual(mappingsOf(this.pid, memfdName), [], `no mapping of ${memfdName} left`);
  }

  /** Port 0 was never disconnected and still answers. */
  async assertGoodIntact(): Promise<void> {
    assert.doesNotMatch(this.s.log(), /port 0: connection closed/);
    assert.equal(await this.good.callU64(Req.GET_QUEUE_NUM), 1n);
  }

  /** A fresh well-behaved front-end on port 1: traffic flows both ways. */
  async assertPort1Recovers(tag: number): Promise<void> {
    const peer = await VhostFrontend.connectReady(this.b);
    try {
      await peer.handshake({ memory: { name: 'qnh-peer' } });
      await flows(this.good, peer, 200, tag);
    } finally {
      peer.close();
    }
  }

  async stop(): Promise<PortStatsLine[]> {
    const { code, final } = await this.s.stop();
    assert.equal(code, 0, `exit code\n${this.s.log().slice(-1500)}`);
    return final;
  }

  private readonly others: VhostFrontend[] = [];

  /** A front-end on port 1 that kill() closes (todo tests leave theirs open). */
  connect1(): VhostFrontend {
    const fe = VhostFrontend.connect(this.b);
    this.others.push(fe);
    return fe;
  }

  /** SIGKILL if still running; closes our front-ends (their memfds and mappings). */
  kill(): void {
    if (this.s.proc.exitCode === null && this.s.proc.signalCode === null) this.s.proc.kill('SIGKILL');
    for (const fe of [this.good, ...this.others]) fe?.close();
  }
}

/** Frames tagged `tag` received on fe's RX ring, in order (others are skipped); optionally re-posting buffers. */
function collect(fe: VhostFrontend, n: number, tag: number, o: { repost?: boolean; timeoutMs?: number } = {}): Promise<{ seqs: number[]; rejected: number }> {
  const p = collectNext(fe, n, tag, o);
  // Callers start collecting before they transmit; if transmitting fails first,
  // this promise is abandoned and its own timeout must not surface later.
  p.catch(() => undefined);
  return p;
}

async function collectNext(fe: VhostFrontend, n: number, tag: number, o: { repost?: boolean; timeoutMs?: number }): Promise<{ seqs: number[]; rejected: number }> {
  const seqs: number[] = [];
  let rejected = 0;
  await VhostFrontend.until(() => {
    for (const f of fe.rx.takeRx()) {
      if (!f) rejected++;
      else if (frameSeq(f).tag === tag) seqs.push(frameSeq(f).seq);
    }
    if ((o.repost ?? true) && fe.rx.freeCount) fe.rx.postRx();
    return seqs.length >= n;
  }, o.timeoutMs ?? 3000, () => `${n} frames tagged ${tag} (got ${seqs.length})`);
  return { seqs, rejected };
}

const range = (n: number): number[] => Array.from({ length: n }, (_, i) => i);

/** n frames each way between two front-ends, every one arriving, in order. */
async function flows(p: VhostFrontend, q: VhostFrontend, n: number, tag: number): Promise<void> {
  for (const [from, to, t] of [[p, q, tag], [q, p, tag + 1]] as const) {
    const dir = from === p ? 'first -> second' : 'second -> first';
    // Concurrently: whichever side fails first is the error reported.
    const [, got] = await Promise.all([from.transmit(range(n).map((i) => testFrame(t, i))), collect(to, n, t)]).catch((e: Error) => {
      const rx = to.rx;
      return assert.fail(`${dir}: ${e.message}; receiver RX: avail.idx ${rx.q.availIdx}, used.idx ${rx.usedIdx()}, ${rx.outstanding.size} buffers posted, ${rx.freeCount} free`);
    });
    assert.deepEqual(got.seqs, range(n), dir);
  }
}

// ---- hand-built chains ------------------------------------------------------

/** Bump allocator over the scratch area of a guest's memory. */
class Scratch {
  private next: number;
  constructor(readonly g: GuestMemfd) { this.next = g.gpaBase + LAYOUT.scratch; }
  alloc(len: number, align = 16): number {
    this.next = Math.ceil(this.next / align) * align;
    const at = this.next;
    this.next += len;
    return at;
  }
  /** net header + frame in scratch memory; returns its gpa and length. */
  packet(frame: Uint8Array, at?: number): { gpa: number; len: number } {
    const gpa = at ?? this.alloc(NET_HDR + frame.length);
    this.g.u8.fill(0, this.g.host(gpa, NET_HDR), this.g.host(gpa) + NET_HDR);
    this.g.write(gpa + NET_HDR, frame);
    return { gpa, len: NET_HDR + frame.length };
  }
}

// ---- the tests ----------------------------------------------------------------

describe('vhost-user back-end against hostile front-ends', () => {
  let dir: string;
  before(() => { dir = mkdtempSync(join(tmpdir(), 'qnh-fuzz-')); });
  after(() => rmSync(dir, { recursive: true, force: true }));

  for (const poll of ['event', 'busy'] as const) {
    it(`hostile rings on port 1 (${poll} mode): bad chains rejected and counted, broken queues contained, port 0 unaffected`, async (t) => {
      const bench = await Bench.start(dir, `rings-${poll}`, poll);
      try {
        await hostileRings(bench, t);
        await bench.assertGoodIntact();
        await bench.assertPort1Recovers(40);
        await bench.stop();
      } finally {
        bench.kill();
      }
    });

    it(`hostile control messages on port 1 (${poll} mode): each one refused or the connection closed, nothing leaks`, async () => {
      const bench = await Bench.start(dir, `ctl-${poll}`, poll);
      try {
        await hostileControl(bench);
        await bench.assertReleased('qnh-ctl');
        await bench.assertGoodIntact();
        await bench.assertPort1Recovers(50);
        await bench.stop();
      } finally {
        bench.kill();
      }
    });
  }

  it(`seeded random messages (seed 0x${SEED.toString(16)}, 3000 over many connections): each answered or closed, never a hang; the process survives`, async (t) => {
    const bench = await Bench.start(dir, 'fuzz', 'event');
    try {
      const r = await fuzz(bench, SEED, 3000);
      if (VERBOSE) {
        const why = new Map<string, number>();
        for (const m of bench.s.log().matchAll(/port 1: connection closed: (.{0,45})/g)) why.set(m[1]!, (why.get(m[1]!) ?? 0) + 1);
        console.error([...why].sort((x, y) => y[1] - x[1]).slice(0, 25));
      }
      t.diagnostic(`fuzz: ${r.connections} connections, ${r.closes} closed by the back-end, ${r.replies} replies, ${r.scribbles} ring scribbles`);
      const st = await bench.stats();
      t.diagnostic(`port 1 counters at the end: ${JSON.stringify(st[1])}`);
      await bench.assertReleased('qnh-fuzz');
      await bench.assertGoodIntact();
      await bench.assertPort1Recovers(60);
      await bench.stop();
    } finally {
      bench.kill();
    }
  });

  // ---- inputs that used to kill or freeze the back-end, and one that still does ----

  // Regression (fixed in fe56fbd); before it: dataplane/port.ts WorkerPort.setMemory maps
  // mmap_offset+size without checking the fd size; the first access past EOF is SIGBUS and kills
  // the process
  it('a memory region larger than its memfd, with a buffer in the part past EOF', async () => {
    const bench = await Bench.start(dir, 'eof', 'event');
    try {
      const h = bench.connect1();
      await h.handshake({ memory: { name: 'qnh-eof' } });
      const regions = h.guest!.regions();
      regions[0]!.memorySize = 64n << 20n; // the memfd has 4 MiB
      await h.ack(Req.SET_MEM_TABLE, F.memTable(regions), h.guest!.fds()).catch(() => undefined);
      const [id] = h.tx.take(1);
      h.tx.q.setDesc(id!, h.guest!.gpaBase + (32 << 20), 100, 0, 0);
      h.tx.publishRaw(id!);
      await sleep(300);
      bench.assertAlive('TX buffer past the end of the memfd');
    } finally {
      bench.kill();
    }
  });

  // Regression (fixed in fe56fbd); before it: port.ts maps mmap_offset+size as one koffi.view; views
  // above 4 GiB make koffi abort() the process (FATAL ERROR: Error::New napi_get_last_error_info),
  // so any guest needing a >4 GiB mapping kills the back-end
  it('a guest with more than 4 GiB in one mapping (QEMU: 6 GiB RAM, high part at mmap_offset 2 GiB)', async () => {
    const bench = await Bench.start(dir, 'big', 'event');
    const fd = memfdCreate('qnh-big', 6 * 2 ** 30);
    try {
      const h = bench.connect1();
      h.prepareGuest({ memory: { name: 'qnh-big-fe' } });
      await h.set(Req.SET_OWNER);
      await h.negotiateProtocol();
      await h.setFeatures();
      const regions: MemRegion[] = [
        { guestPhysAddr: 0n, memorySize: 2n ** 31n, userspaceAddr: 0x7f00_0000_0000n, mmapOffset: 0n },
        { guestPhysAddr: 2n ** 32n, memorySize: 2n ** 32n, userspaceAddr: 0x7f00_8000_0000n, mmapOffset: 2n ** 31n },
      ];
      const r = await h.ack(Req.SET_MEM_TABLE, F.memTable(regions), [fd, fd]).then((v) => `ack ${v}`, (e: Error) => e.message);
      bench.assertAlive(`6 GiB memory table (${r})`);
      assert.equal(r, 'ack 0', 'a legitimate memory table is accepted');
    } finally {
      closeFd(fd);
      bench.kill();
    }
  });

  // Regression (fixed in fe56fbd); before it: worker.ts rewatch() -> poller.ts watchReadable():
  // koffi.node.poll on a non-pollable fd aborts the process (FATAL ERROR: Error::New
  // napi_get_last_error_info) instead of throwing
  it('a kick fd that cannot be polled (/dev/null) in event mode', async () => {
    const bench = await Bench.start(dir, 'kick', 'event');
    const devNull = openSync('/dev/null', 'r');
    try {
      const h = bench.connect1();
      await h.handshake({ memory: { name: 'qnh-kick' } });
      const r = await h.ack(Req.SET_VRING_KICK, F.vringFdMsg(1, false), [devNull]).then((v) => `ack ${v}`, (e: Error) => e.message);
      await sleep(200);
      bench.assertAlive(`SET_VRING_KICK /dev/null (${r})`);
    } finally {
      closeFd(devNull);
      bench.kill();
    }
  });

  // `reblock`: the front-end clears O_NONBLOCK again after handing the fd
  // over. The flag lives in the open file description both sides share, so
  // the back-end setting it (fe56fbd) is not enough on its own.
  for (const reblock of [false, true]) {
    it(`a call fd whose write blocks (eventfd counter at its maximum${reblock ? ', O_NONBLOCK cleared again by the front-end' : ''}) does not freeze other ports`, {
      // Regressions: notify() used to block the shared worker forever on such
      // an fd; setting O_NONBLOCK was not enough (reblock), a zero-timeout
      // poll before the write is.
    }, async () => {
      const bench = await Bench.start(dir, `call-${reblock}`, 'event');
      const stuck = makeEventfd({ blocking: true });
      eventfdAdd(stuck, 0xffff_ffff_ffff_fffen);
      try {
        const h = bench.connect1();
        await h.handshake({ memory: { name: 'qnh-call' } });
        // Refusing such an fd would be fine too; accepting it must not hurt.
        if (await h.ack(Req.SET_VRING_CALL, F.vringFdMsg(1, false), [stuck]) !== 0n) return;
        if (reblock) setNonBlocking(stuck, false);
        await h.transmit([testFrame(7, 0)], 2000); // its completion needs a call
        const got = collect(h, 10, 8, { timeoutMs: 2000 });
        await bench.good.transmit(range(10).map((i) => testFrame(8, i)), 2000);
        assert.deepEqual((await got).seqs, range(10), 'port 0 -> port 1 still forwards');
      } finally {
        closeFd(stuck);
        bench.kill();
      }
    });
  }

  // Regression (fixed in fe56fbd); before it: a peer RX queue that breaks after the RingToRing pipe was
  // built makes forward() unpop and stall (forward.ts, deliverFrame RX_BROKEN) instead of dropping
  // as rebuild() would for a queue already broken; port 0 TX stalls until port 1 disconnects
  it('port 0 transmit completes (drops) once the peer RX ring broke', async () => {
    const bench = await Bench.start(dir, 'rxbrk', 'event');
    try {
      const h = bench.connect1();
      await h.handshake({ memory: { name: 'qnh-rxbrk' }, postRx: false });
      h.rx.q.setAvailIdx(1000); // a jump of more than the ring size
      h.rx.kick();
      await bench.good.transmit([testFrame(9, 0)], 2000);
    } finally {
      bench.kill();
    }
  });

  // Regression (fixed in fe56fbd); before it: split.ts walk() bounds an indirect chain by len/16 (the
  // table size a peer chooses, up to its region size) and zero-length descriptors add no segment;
  // each such chain costs millions of steps in the one worker that serves every port
  it('a looping zero-length indirect table spanning 60 MiB does not starve port 0', async (t) => {
    const bench = await Bench.start(dir, 'loop', 'event');
    try {
      const h = bench.connect1();
      const size = 64 << 20;
      await h.handshake({ memory: { name: 'qnh-loop', size } });
      const g = h.guest!;
      const table = g.gpaBase + LAYOUT.scratch;
      g.writeDesc(table, 0, 0, NEXT, 1);
      g.writeDesc(table + 16, 0, 0, NEXT, 0);
      // The same 100 frames without the looping chains first: on a loaded
      // machine both take longer, and only the difference says "starved".
      const b0 = Date.now();
      const base = collect(h, 100, 11, { timeoutMs: 30000 });
      await bench.good.transmit(range(100).map((i) => testFrame(11, i)), 30000);
      await base;
      const baseMs = Date.now() - b0;
      const [id] = h.tx.take(1);
      h.tx.q.setDesc(id!, table, size - LAYOUT.scratch, IND, 0);
      for (let i = 0; i < 64; i++) h.tx.publishRaw(id!, i === 63);
      const t0 = Date.now();
      const got = collect(h, 100, 10, { timeoutMs: 30000 });
      await bench.good.transmit(range(100).map((i) => testFrame(10, i)), 30000);
      await got;
      const ms = Date.now() - t0;
      t.diagnostic(`100 frames: ${baseMs} ms alone, ${ms} ms beside 64 looping chains`);
      assert.ok(ms < 1000 + 10 * baseMs, `100 frames from port 0 took ${ms} ms while port 1 posted 64 looping chains (${baseMs} ms without them)`);
    } finally {
      bench.kill();
    }
  });

  // Regression (fixed in fe56fbd); before it: connection.ts onReadable() drains the socket into an
  // unbounded queue while process() awaits the worker, so one front-end makes the process hold
  // thousands of received fds at once (measured ~5000 for 20000 SET_VRING_CALL)
  it('a flood of fd-carrying messages is read no faster than it is handled', async (t) => {
    const bench = await Bench.start(dir, 'flood', 'event');
    const ev = makeEventfd();
    try {
      const h = bench.connect1();
      await h.handshake({ memory: { name: 'qnh-flood' } });
      let peak = 0;
      const mon = setInterval(() => { peak = Math.max(peak, fdCount(bench.pid)); }, 5);
      const msg = F.encodeRequest(Req.SET_VRING_CALL, F.vringFdMsg(1, false));
      for (let i = 0; i < 20000; i++) {
        h.send(msg, [ev]);
        if (i % 500 === 0) await sleep(0);
      }
      await h.barrier();
      clearInterval(mon);
      t.diagnostic(`peak fds in the back-end: ${peak} (baseline ${bench.baseFds.length})`);
      bench.assertAlive('fd flood');
      assert.ok(peak < bench.baseFds.length + 100, `back-end held ${peak} fds at once`);
    } finally {
      closeFd(ev);
      bench.kill();
    }
  });

  // Regression (fixed in fe56fbd); before it: port.ts collectStats() recomputes badChains from the queues
  // running now, so a restart (GET_VRING_BASE + kick, SET_MEM_TABLE, reconnect) erases the
  // evidence, unlike txFrames/rxFrames
  it('badChains stays counted after the hostile ring restarts', async () => {
    const bench = await Bench.start(dir, 'count', 'event');
    try {
      const h = bench.connect1();
      await h.handshake({ memory: { name: 'qnh-count' } });
      const [id] = h.tx.take(1);
      h.tx.q.setDesc(id!, 0xdead_0000_0000, 100, 0, 0);
      h.tx.publishRaw(id!);
      await VhostFrontend.until(() => h.tx.takeUsed().length === 1, 2000, () => 'the bad chain back');
      assert.equal((await bench.stats())[1]!.badChains, 1);
      await h.getVringBase(1);
      await h.set(Req.SET_VRING_KICK, F.vringFdMsg(1, false), [h.tx.kickFd]);
      assert.equal((await bench.stats())[1]!.badChains, 1, 'still counted after the ring restarted');
    } finally {
      bench.kill();
    }
  });
});

// ---- hostile rings ------------------------------------------------------------

async function hostileRings(bench: Bench, t: TestContext): Promise<void> {
  const { good } = bench;
  // Two regions (the second at an mmap_offset, user addresses not contiguous):
  // buffers may cross from one into the other.
  const h = bench.connect1();
  await h.handshake({ memory: { name: 'qnh-hostile', regions: 2, size: 8 << 20 }, postRx: false });
  assert.ok(h.features & featureBit(Feature.INDIRECT_DESC));
  const g = h.guest!;
  const sc = new Scratch(g);
  const rx = h.rx;
  const tx = h.tx;

  // 1. RX: bad buffers in front of good ones. They come back with len 0, the
  //    frames go into the good ones, in order.
  {
    const ids = rx.take(5);
    const buf = sc.alloc(2048);
    rx.q.setDesc(ids[0]!, buf, 2048, 0, 0); // device-readable only: no room for anything
    rx.q.setDesc(ids[1]!, buf, 4, WRITE, 0); // smaller than the net header
    rx.q.setDesc(ids[2]!, buf, 100, WRITE | NEXT, ids[3]!); // a loop
    rx.q.setDesc(ids[3]!, buf, 100, WRITE | NEXT, ids[2]!);
    rx.q.setDesc(ids[4]!, 0xdead_0000_0000, 2048, WRITE, 0); // outside guest memory
    for (const id of [ids[0]!, ids[1]!, ids[2]!, ids[4]!]) rx.publishRaw(id, false);
    rx.postRx(50);
    const got = collect(h, 50, 20, { repost: false });
    await good.transmit(range(50).map((i) => testFrame(20, i)));
    const r = await got;
    assert.deepEqual(r.seqs, range(50));
    assert.equal(r.rejected, 4, 'each bad RX chain returned with len 0');
  }
  const rxBad = 4;

  // 2. TX: bad chains interleaved with good frames; port 0 gets exactly the good ones.
  const ids = tx.take(100);
  let nextId = 0;
  const id = (): number => ids[nextId++]!;
  const frameAt = (seq: number): { gpa: number; len: number } => sc.packet(testFrame(30, seq));
  const good1 = (seq: number): number => {
    const p = frameAt(seq);
    const d = id();
    tx.q.setDesc(d, p.gpa, p.len, 0, 0);
    return d;
  };
  const buf = frameAt(999);
  /** An indirect table in scratch memory, `skew` bytes past a 16-byte boundary. */
  const table = (entries: [number | bigint, number, number, number][], skew = 0): number => {
    const at = sc.alloc(16 * entries.length + 16) + skew;
    entries.forEach(([addr, len, flags, next], k) => g.writeDesc(at + 16 * k, addr, len, flags, next));
    return at;
  };
  const bad: [string, () => number][] = [
    ['descriptor loop', () => { const a = id(), b = id(); tx.q.setDesc(a, buf.gpa, 30, NEXT, b); tx.q.setDesc(b, buf.gpa, 30, NEXT, a); return a; }],
    ['next out of range', () => { const a = id(); tx.q.setDesc(a, buf.gpa, 30, NEXT, 300); return a; }],
    ['address outside the regions', () => { const a = id(); tx.q.setDesc(a, 0xdead_0000_0000, 100, 0, 0); return a; }],
    ['address above 2^53', () => { const a = id(); tx.q.setDesc(a, 0xffff_ffff_ffff_f000n, 0x2000, 0, 0); return a; }],
    ['length 0xffffffff', () => { const a = id(); tx.q.setDesc(a, buf.gpa, 0xffffffff, 0, 0); return a; }],
    ['buffer past the end of memory', () => { const a = id(); tx.q.setDesc(a, g.gpaBase + g.size - 10, 100, 0, 0); return a; }],
    ['readable after writable', () => { const a = id(), b = id(); tx.q.setDesc(a, buf.gpa, 30, WRITE | NEXT, b); tx.q.setDesc(b, buf.gpa, 30, 0, 0); return a; }],
    ['nested indirect table', () => { const a = id(); const inner = table([[buf.gpa, buf.len, 0, 0]]); tx.q.setDesc(a, table([[inner, 16, IND, 0]]), 16, IND, 0); return a; }],
    ['indirect length 17', () => { const a = id(); tx.q.setDesc(a, table([[buf.gpa, buf.len, 0, 0]]), 17, IND, 0); return a; }],
    ['indirect length 0', () => { const a = id(); tx.q.setDesc(a, table([[buf.gpa, buf.len, 0, 0]]), 0, IND, 0); return a; }],
    ['indirect table outside memory', () => { const a = id(); tx.q.setDesc(a, 0xdead_0000_0000, 64, IND, 0); return a; }],
    ['indirect length 0xfffffff0', () => { const a = id(); tx.q.setDesc(a, table([[buf.gpa, buf.len, 0, 0]]), 0xfffffff0, IND, 0); return a; }],
    ['indirect with NEXT', () => { const a = id(), b = id(); tx.q.setDesc(a, table([[buf.gpa, buf.len, 0, 0]]), 16, IND | NEXT, b); tx.q.setDesc(b, buf.gpa, 30, 0, 0); return a; }],
    ['loop inside an indirect table', () => { const a = id(); tx.q.setDesc(a, table([[buf.gpa, 30, NEXT, 1], [buf.gpa, 30, NEXT, 0]]), 32, IND, 0); return a; }],
    ['next out of an indirect table', () => { const a = id(); tx.q.setDesc(a, table([[buf.gpa, 30, NEXT, 5], [buf.gpa, 30, 0, 0]]), 32, IND, 0); return a; }],
    ['1100 segments', () => {
      const a = id();
      const at = sc.alloc(16 * 1100);
      for (let k = 0; k < 1100; k++) g.writeDesc(at + 16 * k, buf.gpa, 1, k < 1099 ? NEXT : 0, k + 1);
      tx.q.setDesc(a, at, 16 * 1100, IND, 0);
      return a;
    }],
  ];
  // Chains that are fine as chains but not as packets: dropped, not "bad".
  const malformed: [string, () => number][] = [
    ['zero-length chain', () => { const a = id(); tx.q.setDesc(a, buf.gpa, 0, 0, 0); return a; }],
    ['shorter than the net header', () => { const a = id(); tx.q.setDesc(a, buf.gpa, 5, 0, 0); return a; }],
  ];
  // Odd but valid: each must be delivered.
  const odd: [string, (seq: number) => number][] = [
    ['indirect table not 16-byte aligned', (seq) => {
      const p = frameAt(seq);
      const a = id();
      tx.q.setDesc(a, table([[p.gpa, 5, NEXT, 1], [p.gpa + 5, p.len - 5, 0, 0]], 6), 32, IND, 0);
      return a;
    }],
    ['frame cut into 10 descriptors (header split too)', (seq) => {
      const p = frameAt(seq);
      const d = range(10).map(() => id());
      const cut = [0, 3, 11, 12, 13, 20, 30, 40, 50, 60, p.len];
      d.forEach((x, k) => tx.q.setDesc(x, p.gpa + cut[k]!, cut[k + 1]! - cut[k]!, k < 9 ? NEXT : 0, d[k + 1] ?? 0));
      return d[0]!;
    }],
    ['buffer crossing from region 0 into region 1', (seq) => {
      const p = sc.packet(testFrame(30, seq), g.gpaBase + g.size / 2 - 30);
      const a = id();
      tx.q.setDesc(a, p.gpa, p.len, 0, 0);
      return a;
    }],
  ];
  let seq = 0;
  const heads: number[] = [];
  for (const [, make] of [...bad, ...malformed]) {
    heads.push(good1(seq++));
    heads.push(make());
  }
  for (const [, make] of odd) heads.push(make(seq++));
  heads.push(good1(seq++));
  const got = collect(good, seq, 30);
  for (const [k, head] of heads.entries()) tx.publishRaw(head, k === heads.length - 1);
  assert.deepEqual((await got).seqs, range(seq), 'port 0 got every good frame, in order');
  await VhostFrontend.until(() => { tx.takeUsed(); return tx.q.usedSeen === tx.q.availIdx; }, 2000, () => 'every TX chain to come back used');

  let st = await bench.stats();
  t.diagnostic(`after bad chains: ${JSON.stringify(st[1])}`);
  assert.equal(st[1]!.badChains, rxBad + bad.length, 'every bad chain counted');
  assert.equal(st[1]!.txDropped, malformed.length);
  assert.equal(st[1]!.brokenQueues, 0);
  assert.equal(st[0]!.badChains + st[0]!.brokenQueues, 0);
  bench.assertAlive('bad chains');

  // 3. Broken queues. TX: a head >= the ring size. Port 0 still forwards into port 1's RX.
  tx.q.setAvailEntry(tx.q.availIdx, 999);
  tx.q.availIdx = (tx.q.availIdx + 1) & 0xffff;
  tx.q.setAvailIdx(tx.q.availIdx);
  tx.kick();
  {
    // Exactly 20 buffers, all consumed: the back-end's cached avail index is
    // then used up, so its next look at avail.idx sees the jump below.
    rx.postRx(20);
    const more = collect(h, 20, 31, { repost: false });
    await good.transmit(range(20).map((i) => testFrame(31, i)));
    assert.deepEqual((await more).seqs, range(20));
  }
  // ... and a TX frame queued behind the broken entry never leaves.
  tx.sendFrames([testFrame(32, 0)]);
  // RX: avail.idx jumps by more than the ring size.
  rx.q.setAvailIdx((rx.q.availIdx + 1000) & 0xffff);
  rx.kick();
  good.tx.sendFrames([testFrame(33, 0)]); // the pop that finds port 1's RX ring broken
  await sleep(300);
  st = await bench.stats();
  t.diagnostic(`after breaking both rings: ${JSON.stringify(st[1])}`);
  assert.equal(st[1]!.brokenQueues, 2, 'both of port 1\'s queues broken');
  assert.equal(st[0]!.brokenQueues, 0);
  assert.equal(collectNow(good, 32), 0, 'nothing from the broken TX ring');
  bench.assertAlive('broken queues');

  // 4. The hostile front-end leaves: everything it gave is released, and port
  //    0's pending frame completes (no peer: dropped).
  h.close();
  await VhostFrontend.until(() => { good.tx.reclaim(); return good.tx.outstanding.size === 0; }, 3000, () => 'port 0 TX to drain once port 1 is gone');
  await bench.assertReleased('qnh-hostile');
}

/** Frames tagged `tag` already waiting on fe's RX ring. */
function collectNow(fe: VhostFrontend, tag: number): number {
  return fe.rx.takeRx().filter((f) => f && frameSeq(f).tag === tag).length;
}

// ---- hostile control messages ----------------------------------------------------

type Outcome = 'closed' | 'refused' | 'accepted';

/**
 * Sends bytes (+fds), then a probe; reports whether the back-end closed, acked
 * non-zero, or accepted (ack 0, or no ack at all before the probe's reply).
 */
async function outcome(fe: VhostFrontend, bytes: Uint8Array, fds: readonly number[] = []): Promise<Outcome> {
  const req = new DataView(bytes.buffer, bytes.byteOffset).getUint32(0, true);
  const probe = req === Req.GET_QUEUE_NUM ? Req.GET_FEATURES : Req.GET_QUEUE_NUM;
  if (!fe.send(bytes, fds) || !fe.request(probe)) return 'closed';
  // Read through to the probe's reply, so the next call starts on a clean stream.
  let result: Outcome = 'accepted';
  for (;;) {
    const e = await fe.next(3000);
    if (e.kind === 'timeout') throw new Error('the back-end neither answered nor closed');
    if (e.kind === 'closed') return 'closed';
    if (e.reply.request === probe) return result;
    if (e.reply.request === req && e.reply.payload.length === 8 && F.replyU64(e.reply) !== 0n) result = 'refused';
  }
}

const hdr = (request: number, flags: number, size: number, payload: Uint8Array = new Uint8Array(0)): Uint8Array => {
  const b = new Uint8Array(12 + payload.length);
  const v = new DataView(b.buffer);
  v.setUint32(0, request, true);
  v.setUint32(4, flags, true);
  v.setUint32(8, size, true);
  b.set(payload, 12);
  return b;
};
const ACK = HdrFlag.VERSION | HdrFlag.NEED_REPLY;
const withAck = (req: number, payload?: Uint8Array): Uint8Array => F.encodeRequest(req, payload, { needReply: true });

interface Ctx {
  fe: VhostFrontend;
  g: GuestMemfd;
  /** fds for this case, closed after it. */
  own: (fd: number) => number;
}

const region = (g: GuestMemfd, over: Partial<MemRegion> = {}): MemRegion => ({ ...g.regions()[0]!, ...over });

async function ringReady(c: Ctx, index = 1): Promise<void> {
  await c.fe.sendMemTable();
  await c.fe.set(Req.SET_VRING_NUM, F.vringState(index, 256));
}

const CASES: [string, Outcome | Outcome[], (c: Ctx) => Promise<Outcome>][] = [
  // Framing and header.
  ['size field 0x10000', 'closed', (c) => outcome(c.fe, hdr(Req.SET_MEM_TABLE, ACK, 0x10000))],
  [`payload of ${MAX_PAYLOAD_SIZE + 1} bytes`, 'closed', (c) => outcome(c.fe, hdr(Req.SET_CONFIG, ACK, MAX_PAYLOAD_SIZE + 1, new Uint8Array(MAX_PAYLOAD_SIZE + 1)))],
  ['version 0', 'closed', (c) => outcome(c.fe, hdr(Req.GET_FEATURES, 0, 0))],
  ['version 2', 'closed', (c) => outcome(c.fe, hdr(Req.GET_FEATURES, 2, 0))],
  ['version 3', 'closed', (c) => outcome(c.fe, hdr(Req.GET_FEATURES, 3, 0))],
  ['REPLY flag on a request', 'closed', (c) => outcome(c.fe, hdr(Req.SET_OWNER, 0x5, 0))],
  ['undefined flag bit 4', 'closed', (c) => outcome(c.fe, hdr(Req.SET_OWNER, 0x11, 0))],
  ['flags 0xffffffff', 'closed', (c) => outcome(c.fe, hdr(Req.SET_OWNER, 0xffffffff, 0))],
  // Payload sizes.
  ['SET_FEATURES with 7 bytes', 'closed', (c) => outcome(c.fe, withAck(Req.SET_FEATURES, new Uint8Array(7)))],
  ['SET_VRING_NUM with 12 bytes', 'closed', (c) => outcome(c.fe, withAck(Req.SET_VRING_NUM, new Uint8Array(12)))],
  ['SET_VRING_ADDR with 32 bytes', 'closed', (c) => outcome(c.fe, withAck(Req.SET_VRING_ADDR, new Uint8Array(32)))],
  ['GET_FEATURES with a payload', 'closed', (c) => outcome(c.fe, withAck(Req.GET_FEATURES, new Uint8Array(8)))],
  ['SET_MEM_TABLE saying 2 regions, carrying 1', 'closed', (c) => {
    const p = F.memTable([region(c.g)]);
    new DataView(p.buffer).setUint32(0, 2, true);
    return outcome(c.fe, withAck(Req.SET_MEM_TABLE, p), [c.g.fd, c.g.fd]);
  }],
  ['GET_CONFIG of 300 bytes', 'closed', (c) => outcome(c.fe, withAck(Req.GET_CONFIG, new Uint8Array(12 + 250).fill(0xff)))],
  // fd counts.
  ['GET_FEATURES with an fd', 'closed', (c) => outcome(c.fe, withAck(Req.GET_FEATURES), [c.g.fd])],
  ['SET_MEM_TABLE: 1 region, 2 fds', 'closed', (c) => outcome(c.fe, withAck(Req.SET_MEM_TABLE, F.memTable([region(c.g)])), [c.g.fd, c.g.fd])],
  ['SET_VRING_CALL: no fd, no NOFD', 'closed', (c) => outcome(c.fe, withAck(Req.SET_VRING_CALL, F.vringFdMsg(0, false)))],
  ['SET_VRING_KICK: NOFD and an fd', 'closed', (c) => outcome(c.fe, withAck(Req.SET_VRING_KICK, F.vringFdMsg(0, true)), [c.fe.rx.kickFd])],
  ['9 fds on one message', 'closed', (c) => outcome(c.fe, withAck(Req.SET_VRING_CALL, F.vringFdMsg(0, false)), new Array<number>(9).fill(c.fe.rx.callFd))],
  ['33 fds on one message', 'closed', (c) => outcome(c.fe, withAck(Req.SET_VRING_CALL, F.vringFdMsg(0, false)), new Array<number>(33).fill(c.fe.rx.callFd))],
  ['SET_VRING_KICK with undefined bits', 'closed', (c) => outcome(c.fe, withAck(Req.SET_VRING_KICK, F.u64(0x10000n)), [c.fe.rx.kickFd])],
  // Unknown ids.
  ['id 0 with NEED_REPLY', 'refused', (c) => outcome(c.fe, withAck(0))],
  ['id 1000 with NEED_REPLY and fds', 'refused', (c) => outcome(c.fe, withAck(1000, new Uint8Array(16)), [c.g.fd, c.fe.rx.callFd])],
  ['id 0xffffffff with NEED_REPLY', 'refused', (c) => outcome(c.fe, withAck(0xffffffff))],
  ['id 28 (POSTCOPY_ADVISE) without NEED_REPLY', 'closed', (c) => outcome(c.fe, F.encodeRequest(28))],
  // Memory tables.
  ['regions overlapping in guest-physical space', 'refused', (c) => {
    const m = c.own(memfdCreate('qnh-ctl', 1 << 20));
    const r = region(c.g);
    return outcome(c.fe, withAck(Req.SET_MEM_TABLE, F.memTable([r, { ...r, memorySize: 1n << 20n, guestPhysAddr: r.guestPhysAddr + 4096n, userspaceAddr: 0x5000_0000_0000n }])), [c.g.fd, m]);
  }],
  ['regions overlapping in front-end virtual space', 'refused', (c) => {
    const r = region(c.g);
    return outcome(c.fe, withAck(Req.SET_MEM_TABLE, F.memTable([r, { ...r, guestPhysAddr: 0x1_0000_0000n, userspaceAddr: r.userspaceAddr + 8192n }])), [c.g.fd, c.g.fd]);
  }],
  ['9 regions', 'closed', (c) => outcome(c.fe, withAck(Req.SET_MEM_TABLE, F.memTable(range(9).map((i) => region(c.g, { guestPhysAddr: BigInt(i) << 32n, userspaceAddr: 0x7f00_0000_0000n + (BigInt(i) << 32n) })))), new Array<number>(8).fill(c.g.fd))],
  ['region of size 0', 'closed', (c) => outcome(c.fe, withAck(Req.SET_MEM_TABLE, F.memTable([region(c.g, { memorySize: 0n })])), [c.g.fd])],
  ['region wrapping past 2^64', 'closed', (c) => outcome(c.fe, withAck(Req.SET_MEM_TABLE, F.memTable([region(c.g, { guestPhysAddr: (1n << 64n) - 4096n, memorySize: 8192n })])), [c.g.fd])],
  ['region ending above 2^53', 'refused', (c) => outcome(c.fe, withAck(Req.SET_MEM_TABLE, F.memTable([region(c.g, { memorySize: 1n << 60n })])), [c.g.fd])],
  ['region with mmap_offset 4 (views must be 8-aligned)', ['closed', 'refused'], (c) => outcome(c.fe, withAck(Req.SET_MEM_TABLE, F.memTable([region(c.g, { mmapOffset: 4n, memorySize: 4096n })])), [c.g.fd])],
  ['region backed by a pipe', ['closed', 'refused'], (c) => outcome(c.fe, withAck(Req.SET_MEM_TABLE, F.memTable([region(c.g)])), [c.own(pipe()[0])])],
  ['region backed by /dev/null', ['closed', 'refused'], (c) => outcome(c.fe, withAck(Req.SET_MEM_TABLE, F.memTable([region(c.g)])), [c.own(openSync('/dev/null', 'r'))])],
  ['region backed by an eventfd', ['closed', 'refused'], (c) => outcome(c.fe, withAck(Req.SET_MEM_TABLE, F.memTable([region(c.g)])), [c.own(makeEventfd())])],
  ['region backed by a socket', ['closed', 'refused'], (c) => outcome(c.fe, withAck(Req.SET_MEM_TABLE, F.memTable([region(c.g)])), [c.own(socketPair()[0])])],
  ['ADD_MEM_REG beyond 32 slots', 'refused', async (c) => {
    const m = c.own(memfdCreate('qnh-ctl', 4096));
    let last: Outcome = 'accepted';
    for (let i = 0; i < 33 && last === 'accepted'; i++) {
      last = await outcome(c.fe, withAck(Req.ADD_MEM_REG, F.memRegionMsg({ guestPhysAddr: BigInt(i) << 20n, memorySize: 4096n, userspaceAddr: 0x6000_0000_0000n + (BigInt(i) << 20n), mmapOffset: 0n })), [m]);
      if (last !== 'accepted') assert.equal(i, 32, `region ${i} of 32 refused`);
    }
    return last;
  }],
  ['SET_LOG_BASE with a pipe', 'refused', (c) => outcome(c.fe, withAck(Req.SET_LOG_BASE, F.logBase(4096n, 0n)), [c.own(pipe()[1])])],
  // Rings.
  ['used ring outside memory', ['refused'], async (c) => {
    await ringReady(c);
    await c.fe.set(Req.SET_VRING_ADDR, F.vringAddr({ ...c.fe.tx.addr(), used: BigInt(c.g.uaBase + c.g.size - 16) }));
    return outcome(c.fe, withAck(Req.SET_VRING_KICK, F.vringFdMsg(1, false)), [c.fe.tx.kickFd]);
  }],
  ['desc not 16-byte aligned', 'closed', async (c) => { await ringReady(c); return outcome(c.fe, withAck(Req.SET_VRING_ADDR, F.vringAddr({ ...c.fe.tx.addr(), desc: c.fe.tx.addr().desc + 8n }))); }],
  ['avail at an odd address', 'closed', async (c) => { await ringReady(c); return outcome(c.fe, withAck(Req.SET_VRING_ADDR, F.vringAddr({ ...c.fe.tx.addr(), avail: c.fe.tx.addr().avail + 1n }))); }],
  ['ring addresses above 2^53', 'refused', async (c) => { await ringReady(c); return outcome(c.fe, withAck(Req.SET_VRING_ADDR, F.vringAddr({ ...c.fe.tx.addr(), desc: 1n << 60n }))); }],
  ['rings misaligned in host memory (region user address 2 mod 4)', ['closed', 'refused'], async (c) => {
    // Aligned as front-end addresses, but 2 bytes into a 4-byte word of the
    // mapping: the data path refuses to lay its typed arrays over them.
    await c.fe.set(Req.SET_MEM_TABLE, F.memTable([region(c.g, { userspaceAddr: BigInt(c.g.uaBase) + 2n })]), [c.g.fd]);
    await c.fe.set(Req.SET_VRING_NUM, F.vringState(1, 256));
    await c.fe.set(Req.SET_VRING_ADDR, F.vringAddr(c.fe.tx.addr()));
    return outcome(c.fe, withAck(Req.SET_VRING_KICK, F.vringFdMsg(1, false)), [c.fe.tx.kickFd]);
  }],
  ['ring size 0', 'refused', (c) => outcome(c.fe, withAck(Req.SET_VRING_NUM, F.vringState(0, 0)))],
  ['ring size 3', 'refused', (c) => outcome(c.fe, withAck(Req.SET_VRING_NUM, F.vringState(0, 3)))],
  ['ring size 65536', 'refused', (c) => outcome(c.fe, withAck(Req.SET_VRING_NUM, F.vringState(0, 65536)))],
  ['ring index 2 of 2', 'refused', (c) => outcome(c.fe, withAck(Req.SET_VRING_NUM, F.vringState(2, 256)))],
  ['SET_VRING_KICK for ring 255 with an fd', 'refused', (c) => outcome(c.fe, withAck(Req.SET_VRING_KICK, F.vringFdMsg(255, false)), [c.fe.tx.kickFd])],
  ['SET_VRING_BASE 0x10000', 'refused', (c) => outcome(c.fe, withAck(Req.SET_VRING_BASE, F.vringState(0, 0x10000)))],
  ['SET_VRING_ENABLE 2', 'closed', (c) => outcome(c.fe, withAck(Req.SET_VRING_ENABLE, F.vringState(0, 2)))],
  ['features never offered', 'refused', (c) => outcome(c.fe, withAck(Req.SET_FEATURES, F.u64(0xffff_ffff_ffff_ffffn)))],
  ['NET_SET_MTU 10', 'refused', (c) => outcome(c.fe, withAck(Req.NET_SET_MTU, F.u64(10n)))],
  ['SET_STATUS 0x100', 'closed', (c) => outcome(c.fe, withAck(Req.SET_STATUS, F.u64(0x100n)))],
  // A message cut short, then the front-end goes away (fds arrived with the header).
  ['SET_MEM_TABLE cut short, then EOF', 'closed', async (c) => {
    c.fe.send(withAck(Req.SET_MEM_TABLE, F.memTable([region(c.g)])).subarray(0, 20), [c.g.fd]);
    return 'closed';
  }],
];

async function hostileControl(bench: Bench): Promise<void> {
  for (const [name, expected, run] of CASES) {
    const fe = await VhostFrontend.connectReady(bench.b);
    const own: number[] = [];
    try {
      fe.prepareGuest({ memory: { name: 'qnh-ctl' } });
      await fe.set(Req.SET_OWNER);
      await fe.negotiateProtocol();
      await fe.setFeatures();
      const got = await run({ fe, g: fe.guest!, own: (fd) => { own.push(fd); return fd; } });
      if (VERBOSE) console.error(`${name}: ${got}`);
      assert.ok((Array.isArray(expected) ? expected : [expected]).includes(got), `${name}: expected ${String(expected)}, got ${got}`);
      bench.assertAlive(name);
    } finally {
      fe.close();
      own.forEach(closeFd);
    }
  }
  // Port 0's data path kept going through all of it.
  const peer = await VhostFrontend.connectReady(bench.b);
  try {
    await peer.handshake({ memory: { name: 'qnh-ctl' } });
    await flows(bench.good, peer, 50, 70);
  } finally {
    peer.close();
  }
}

// ---- seeded fuzzing -------------------------------------------------------------

/** xorshift32: the same seed gives the same messages, so a failure can be replayed. */
class Rng {
  constructor(private s: number) {}
  u32(): number {
    let x = this.s;
    x ^= x << 13; x >>>= 0;
    x ^= x >>> 17;
    x ^= x << 5; x >>>= 0;
    this.s = x;
    return x;
  }
  int(n: number): number { return this.u32() % n; }
  pick<T>(xs: readonly T[]): T { return xs[this.int(xs.length)]!; }
  chance(p: number): boolean { return this.u32() / 2 ** 32 < p; }
  bytes(n: number): Uint8Array { return Uint8Array.from(range(n), () => this.int(256)); }
}

interface FuzzResult { connections: number; closes: number; replies: number; scribbles: number }

/** Random descriptors and avail entries in a connection's rings, a random avail.idx step, a kick. */
function scribble(rng: Rng, fe: VhostFrontend): void {
  const g = fe.guest!;
  for (const r of fe.rings) {
    for (let k = rng.int(8); k >= 0; k--) {
      const addr = rng.chance(0.8) ? BigInt(g.gpaBase + rng.int(g.size)) : (BigInt(rng.u32()) << 32n) | BigInt(rng.u32());
      const len = rng.chance(0.7) ? rng.int(4096) : rng.u32();
      r.q.setDesc(rng.int(r.size), addr, len, rng.int(8), rng.chance(0.9) ? rng.int(r.size) : rng.int(0x10000));
    }
    const step = rng.chance(0.9) ? rng.int(8) : rng.int(0x10000);
    for (let k = 0; k < Math.min(step, r.size); k++) r.q.setAvailEntry(r.q.availIdx + k, rng.chance(0.95) ? rng.int(r.size) : rng.int(0x10000));
    r.q.availIdx = (r.q.availIdx + step) & 0xffff;
    r.q.setAvailIdx(r.q.availIdx);
    r.kick();
  }
}

/**
 * Random messages built from valid templates (pointing at the connection's own
 * memory and rings), then mutated: bytes flipped, payload cut or extended,
 * flags replaced, fds added or removed, ids replaced. Steered away from the
 * one known bug (todo test above): no fd it sends can be made to block, and
 * it never touches an fd's flags after sending it.
 */
async function fuzz(bench: Bench, seed: number, total: number): Promise<FuzzResult> {
  const rng = new Rng(seed);
  const res: FuzzResult = { connections: 0, closes: 0, replies: 0, scribbles: 0 };
  const ev = makeEventfd();
  const [pr, pw] = pipe(true);
  const [sa, sb] = socketPair();
  setNonBlocking(sa, true); // a call fd must never block (known bug)
  const devNull = openSync('/dev/null', 'r+');
  const file = memfdCreate('qnh-fuzz', 4096); // a small file: maps, but covers almost nothing
  const pollable = [ev, pr, pw, sa, devNull, file];
  const ids = Object.values(Req) as number[];
  const nums = [0, 1, 2, 3, 64, 256, 1024, 32768, 65535, 65536, 0xffffffff];
  let sent = 0;
  try {
    while (sent < total) {
      const fe = await VhostFrontend.connectReady(bench.b);
      res.connections++;
      try {
        fe.prepareGuest({ memory: { name: 'qnh-fuzz' } });
        // Some connections start from running rings, most from a bare
        // negotiation (REPLY_ACK on), a few from nothing at all.
        const start = rng.int(4);
        if (start === 0) await fe.handshake();
        else if (start < 3) { await fe.set(Req.SET_OWNER); await fe.negotiateProtocol(); }
        for (;;) {
          if (sent >= total) break;
          sent++;
          // Now and then, garbage in the rings too, with traffic from port 0
          // into them (a broken RX ring there stalls port 0 until this
          // connection ends: a known bug, harmless here).
          if (start === 0 && rng.chance(0.05)) {
            scribble(rng, fe);
            res.scribbles++;
            if (rng.chance(0.5)) bench.good.tx.sendFrames(range(1 + rng.int(4)).map((i) => testFrame(90, i)));
          }
          const made = template(rng, fe, ids, nums, pollable);
          let { id, payload, fds } = made;
          const own = made.own;
          // Mutations, mild enough that most connections live for many
          // messages (a closed connection ends the walk into deeper states).
          if (rng.chance(0.3)) {
            payload = payload.slice();
            for (let k = rng.int(4); k >= 0 && payload.length; k--) payload[rng.int(payload.length)] = rng.int(256);
          }
          if (rng.chance(0.05)) payload = payload.subarray(0, rng.int(payload.length + 1));
          if (rng.chance(0.03)) payload = Uint8Array.from([...payload, ...rng.bytes(rng.int(64))]);
          if (rng.chance(0.03)) id = rng.u32();
          if (rng.chance(0.05)) fds = rng.chance(0.5) ? [] : [...fds, rng.pick(pollable)];
          if (payload.length > MAX_PAYLOAD_SIZE + 16) payload = payload.subarray(0, MAX_PAYLOAD_SIZE + 16);
          fds = rebacked(rng, id, payload, fds, own);
          let flags = HdrFlag.VERSION | (rng.chance(0.8) ? HdrFlag.NEED_REPLY : 0);
          if (rng.chance(0.02)) flags = rng.int(256);
          const closed = !fe.send(hdr(id, flags, payload.length, payload), fds.slice(0, 32));
          own.forEach(closeFd);
          // The probe's reply proves the message before it was handled.
          const probe = id === Req.GET_QUEUE_NUM ? Req.GET_FEATURES : Req.GET_QUEUE_NUM;
          if (closed || !fe.request(probe)) { res.closes++; break; }
          let gone = false;
          for (;;) {
            const e = await fe.next(3000);
            if (e.kind === 'timeout') assert.fail(`seed 0x${seed.toString(16)}, message ${sent} (id ${id}, flags 0x${flags.toString(16)}, ${payload.length} bytes, ${fds.length} fds): no answer and no close`);
            if (e.kind === 'closed') { gone = true; break; }
            res.replies++;
            if (e.reply.request === probe) break;
          }
          if (gone) { res.closes++; break; }
          if (!bench.alive()) break;
        }
      } finally {
        fe.close();
      }
      bench.assertAlive(`fuzz message ${sent}`);
    }
  } finally {
    [ev, pr, pw, sa, sb, devNull, file].forEach(closeFd);
  }
  return res;
}

/**
 * An fd for a region: mostly a (sparse) memfd covering mmap_offset + size,
 * so that tables get past the checks and the data path really maps them;
 * sometimes one page short (must be refused: touching past EOF is SIGBUS) or
 * a pipe (cannot be mapped at all).
 */
function backingFd(rng: Rng, r: MemRegion, own: number[]): number {
  const end = r.mmapOffset + r.memorySize;
  const sane = end > 0n && end <= 1n << 36n;
  const kind = rng.int(10);
  const fd = sane && kind < 8 ? memfdCreate('qnh-fuzz', Number((end + 4095n) & ~4095n) - (kind === 7 ? 4096 : 0)) : pipe(true)[0];
  own.push(fd);
  return fd;
}

/** After mutation: every fd that a region could be mapped from backs that region as it now reads. */
function rebacked(rng: Rng, id: number, payload: Uint8Array, fds: number[], own: number[]): number[] {
  const v = new DataView(payload.buffer, payload.byteOffset, payload.byteLength);
  const at = (off: number): MemRegion => ({
    guestPhysAddr: v.getBigUint64(off, true), memorySize: v.getBigUint64(off + 8, true),
    userspaceAddr: v.getBigUint64(off + 16, true), mmapOffset: v.getBigUint64(off + 24, true),
  });
  const out = fds.slice();
  if (id === Req.SET_MEM_TABLE && payload.length >= 8) {
    for (let i = 0; i < out.length && 8 + 32 * (i + 1) <= payload.length; i++) out[i] = backingFd(rng, at(8 + 32 * i), own);
  } else if ((id === Req.ADD_MEM_REG || id === Req.REM_MEM_REG) && payload.length >= 40 && out.length) {
    out[0] = backingFd(rng, at(8), own);
  }
  return out;
}

/** A plausible message for `id` (random when id is not a Req). `own` fds are closed after sending. */
function template(rng: Rng, fe: VhostFrontend, ids: number[], nums: number[], pollable: number[]): { id: number; payload: Uint8Array; fds: number[]; own: number[] } {
  const id = rng.chance(0.95) ? rng.pick(ids) : rng.chance(0.5) ? rng.int(64) : rng.u32();
  const g = fe.guest!;
  const ring = rng.chance(0.9) ? rng.int(2) : rng.pick([2, 3, 255, 0xffffffff]);
  const num = rng.pick(nums);
  const own: number[] = [];
  const backing = (r: MemRegion): number => backingFd(rng, r, own);
  const someRegion = (): MemRegion => rng.chance(0.5) ? g.regions()[0]! : {
    guestPhysAddr: BigInt(rng.int(16)) << BigInt(rng.pick([12, 20, 30, 40])),
    memorySize: BigInt(1 + rng.int(4096)) << BigInt(rng.pick([0, 12, 20])),
    userspaceAddr: BigInt(rng.u32()) << BigInt(rng.pick([0, 12, 16])),
    mmapOffset: BigInt(rng.int(4)) << BigInt(rng.pick([3, 12, 20])),
  };
  const u64 = (): bigint => rng.chance(0.5) ? BigInt(rng.u32()) : (BigInt(rng.u32()) << 32n) | BigInt(rng.u32());
  switch (id) {
    case Req.SET_FEATURES: return { id, payload: F.u64(rng.chance(0.7) ? fe.offeredFeatures & u64() : u64()), fds: [], own };
    case Req.SET_PROTOCOL_FEATURES: return { id, payload: F.u64(rng.chance(0.7) ? fe.offeredProtocolFeatures & u64() : u64()), fds: [], own };
    case Req.SET_MEM_TABLE: {
      const regions = range(rng.chance(0.8) ? 1 : 1 + rng.int(8)).map(someRegion);
      return { id, payload: F.memTable(regions), fds: regions.map(backing), own };
    }
    case Req.ADD_MEM_REG: case Req.REM_MEM_REG: {
      const r = someRegion();
      return { id, payload: F.memRegionMsg(r), fds: id === Req.ADD_MEM_REG || rng.chance(0.3) ? [backing(r)] : [], own };
    }
    case Req.SET_VRING_NUM: case Req.SET_VRING_BASE: case Req.SET_VRING_ENABLE: case Req.SET_VRING_ENDIAN: case Req.GET_VRING_BASE:
      return { id, payload: F.vringState(ring >>> 0, id === Req.SET_VRING_ENABLE || id === Req.SET_VRING_ENDIAN ? rng.int(3) : num), fds: [], own };
    case Req.SET_VRING_ADDR: {
      const r = fe.rings[ring & 1]!;
      const a = r.addr();
      const jitter = (v: bigint): bigint => (rng.chance(0.8) ? v : BigInt.asUintN(64, v + BigInt(rng.int(1 << 20)) - (1n << 19n)));
      return { id, payload: F.vringAddr({ index: ring >>> 0, flags: rng.chance(0.9) ? 0 : rng.int(4), desc: jitter(a.desc), used: jitter(a.used), avail: jitter(a.avail), log: rng.chance(0.9) ? 0n : u64() & ~3n }), fds: [], own };
    }
    case Req.SET_VRING_KICK: case Req.SET_VRING_CALL: case Req.SET_VRING_ERR: {
      const nofd = rng.chance(0.2);
      return { id, payload: F.vringFdMsg(ring & 0xff, nofd), fds: nofd ? [] : [rng.pick(pollable)], own };
    }
    case Req.SEND_RARP: return { id, payload: F.rarp(rng.bytes(6)), fds: [], own };
    case Req.NET_SET_MTU: return { id, payload: F.u64(rng.chance(0.5) ? BigInt(rng.int(70000)) : u64()), fds: [], own };
    case Req.SET_STATUS: return { id, payload: F.u64(BigInt(rng.int(300))), fds: [], own };
    case Req.SET_LOG_BASE: return { id, payload: F.logBase(BigInt(rng.int(1 << 20)), BigInt(rng.int(4096))), fds: [rng.pick(pollable)], own };
    case Req.SET_LOG_FD: case Req.SET_BACKEND_REQ_FD: return { id, payload: new Uint8Array(0), fds: [rng.pick(pollable)], own };
    case Req.GET_CONFIG: case Req.SET_CONFIG: return { id, payload: F.configMsg(rng.int(300), rng.int(3), rng.chance(0.5) ? rng.int(64) : rng.bytes(rng.int(300))), fds: [], own };
    case Req.IOTLB_MSG: return { id, payload: rng.bytes(32), fds: [], own };
    case Req.GET_INFLIGHT_FD: return { id, payload: rng.bytes(24), fds: [], own };
    case Req.SET_INFLIGHT_FD: return { id, payload: rng.bytes(24), fds: [rng.pick(pollable)], own };
    default:
      // No-body requests, and ids outside Req (random payload).
      return { id, payload: rng.chance(0.8) && ids.includes(id) ? new Uint8Array(0) : rng.bytes(rng.int(48)), fds: rng.chance(0.05) ? [rng.pick(pollable)] : [], own };
  }
}
