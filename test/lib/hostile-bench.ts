// The bench the vhost-user-fuzz-* tests attack: one `vhost-user serve` process
// with two sockets, a well-behaved front-end (ours) on port 0 for the whole
// test and port 1 for the hostile one, plus the checks they share: the
// process alive, its stats lines, every fd and mapping released, port 0
// intact, port 1 usable again; and the traffic and chain-building helpers.
import assert from 'node:assert/strict';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, before } from 'node:test';
import { Req } from '../../src/vhost-user/protocol/index.js';
import { Serve, statsLinesOf, type PortStatsLine } from './serve.js';
import {
  fdList, frameSeq, type GuestMemfd, LAYOUT, mappingsOf, NET_HDR, processAlive, sleep, testFrame, VhostFrontend,
} from './vhost-frontend.js';

export type Poll = 'event' | 'busy';

/** QNH_FUZZ_VERBOSE=1: print each control case's outcome and why fuzz connections were closed. */
export const VERBOSE = Boolean(process.env.QNH_FUZZ_VERBOSE);

// Each Serve adds a process 'exit' listener; a fuzz file starts up to ten.
process.setMaxListeners(40);

/** A fresh directory for the benches' sockets, made before and removed after the enclosing suite. */
export function benchDir(): () => string {
  let dir = '';
  before(() => { dir = mkdtempSync(join(tmpdir(), 'qnh-fuzz-')); });
  after(() => rmSync(dir, { recursive: true, force: true }));
  return () => dir;
}

export class Bench {
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

export function collect(fe: VhostFrontend, n: number, tag: number, o: { repost?: boolean; timeoutMs?: number } = {}): Promise<{ seqs: number[]; rejected: number }> {
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

export const range = (n: number): number[] => Array.from({ length: n }, (_, i) => i);

/** n frames each way between two front-ends, every one arriving, in order. */
export async function flows(p: VhostFrontend, q: VhostFrontend, n: number, tag: number): Promise<void> {
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

/** Bump allocator over the scratch area of a guest's memory. */
export class Scratch {
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

/** Frames tagged `tag` already waiting on fe's RX ring. */
export function collectNow(fe: VhostFrontend, tag: number): number {
  return fe.rx.takeRx().filter((f) => f && frameSeq(f).tag === tag).length;
}
