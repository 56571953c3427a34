// Hostile rings on port 1 of a real `vhost-user serve` (see hostile-bench.ts):
// bad chains rejected and counted, broken queues contained, port 0 unaffected.
import assert from 'node:assert/strict';
import { describe, it, type TestContext } from 'node:test';
import * as F from '../lib/frontend-codec.js';
import { Feature, featureBit, Req } from '../../src/vhost-user/protocol/index.js';
import { VIRTQ_DESC_F_INDIRECT as IND, VIRTQ_DESC_F_NEXT as NEXT, VIRTQ_DESC_F_WRITE as WRITE } from '../lib/mock-driver.js';
import { Bench, benchDir, collect, collectNow, range, Scratch } from '../lib/hostile-bench.js';
import { LAYOUT, sleep, testFrame, VhostFrontend } from '../lib/vhost-frontend.js';

describe('vhost-user back-end against hostile front-ends: rings', () => {
  const dir = benchDir();

  for (const poll of ['event', 'busy'] as const) {
    it(`hostile rings on port 1 (${poll} mode): bad chains rejected and counted, broken queues contained, port 0 unaffected`, async (t) => {
      const bench = await Bench.start(dir(), `rings-${poll}`, poll);
      try {
        await hostileRings(bench, t);
        await bench.assertGoodIntact();
        await bench.assertPort1Recovers(40);
        await bench.stop();
      } finally {
        bench.kill();
      }
    });
  }

  // ---- inputs that used to kill or freeze the back-end ----

  // Regression (fixed in fe56fbd); before it: a peer RX queue that breaks after the RingToRing pipe was
  // built makes forward() unpop and stall (forward.ts, deliverFrame RX_BROKEN) instead of dropping
  // as rebuild() would for a queue already broken; port 0 TX stalls until port 1 disconnects
  it('port 0 transmit completes (drops) once the peer RX ring broke', async () => {
    const bench = await Bench.start(dir(), 'rxbrk', 'event');
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
    const bench = await Bench.start(dir(), 'loop', 'event');
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

  // Regression (fixed in fe56fbd); before it: port.ts collectStats() recomputes badChains from the queues
  // running now, so a restart (GET_VRING_BASE + kick, SET_MEM_TABLE, reconnect) erases the
  // evidence, unlike txFrames/rxFrames
  it('badChains stays counted after the hostile ring restarts', async () => {
    const bench = await Bench.start(dir(), 'count', 'event');
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

