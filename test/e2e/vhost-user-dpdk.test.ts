// DPDK testpmd (virtio-user) against our vhost-user back-end: a real,
// independent front-end. Frame counts on both sides must agree exactly.
import assert from 'node:assert/strict';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, before, describe, it } from 'node:test';
import { Serve } from '../lib/serve.js';
import { handshakeFailed, haveTestpmd, Testpmd, type TestpmdOptions, type TestpmdResult } from '../lib/testpmd.js';

const skip = haveTestpmd() ? false : 'dpdk-testpmd is not installed (Debian package dpdk-dev)';
// DPDK's --no-huge memory is a memfd created without MFD_ALLOW_SEALING: it
// can never be sealed against shrinking, so the back-end refuses it unless
// told to trust the front-end.
const TRUST = '--allow-unsealed-memory';

// Frames testpmd counted as sent but still in the ring when it disconnected
// are never consumed (GET_VRING_BASE stops the ring there): at most one ring.
const RING = 256;

function assertCounts(ours: number, theirs: number, what: string): void {
  assert.ok(ours <= theirs + 32 && theirs - ours <= RING, `${what}: back-end ${ours}, testpmd ${theirs} (allowed: up to one ring of ${RING} in flight, +32 for --tx-first)`);
}

/**
 * Runs testpmd for `seconds`, retrying (twice at most) when DPDK's own
 * handshake hits EINTR. A back-end that closes the connection on purpose
 * makes the same message: `done` says when that outcome was reached, so
 * that it is not retried.
 */
async function runTestpmd(opts: TestpmdOptions, seconds: number, done = (): boolean => false): Promise<TestpmdResult> {
  for (let attempt = 0; ; attempt++) {
    const t = new Testpmd({ ...opts, prefix: `${opts.prefix}-${attempt}` });
    const started = await t.waitFor(/Press enter|Port statistics|Tx-pps/, 60000);
    if (started) await new Promise((r) => setTimeout(r, seconds * 1000));
    const r = await t.stop();
    if (!handshakeFailed(r.output) || done() || attempt >= 2) {
      assert.ok(started, `testpmd did not start:\n${r.output.slice(-3000)}`);
      return r;
    }
  }
}

describe('vhost-user back-end with DPDK testpmd (virtio-user)', { skip }, () => {
  let dir: string;
  before(() => { dir = mkdtempSync(join(tmpdir(), 'qnh-vu-')); });
  after(() => rmSync(dir, { recursive: true, force: true }));

  for (const poll of ['event', 'busy'] as const) {
    it(`txonly into a sink port (${poll} mode): every frame testpmd sent was received`, async () => {
      const sock = join(dir, `sink-${poll}.sock`);
      const s = new Serve(['--socket', sock, '--poll', poll, TRUST]);
      try {
        await s.ready([sock]);
        const r = await runTestpmd({ vdevs: [`net_virtio_user0,path=${sock},queues=1`], forwardMode: 'txonly', lcores: '0@1,1@0', prefix: `qnh-sink-${poll}` }, 2);
        const { final } = await s.stop();
        const sent = r.ports[0]!.txPackets;
        assert.ok(sent > 10000, `testpmd sent only ${sent} frames`);
        assertCounts(final[0]!.txFrames, sent, 'frames taken from the guest vs testpmd TX-packets');
        assert.equal(final[0]!.badChains, 0);
      } finally {
        await s.stop();
      }
    });
  }

  // Both data paths against the same peer: the C fast path (default) and the
  // TypeScript path alone, which then carries every frame.
  for (const native of [true, false]) {
    it(`two patched ports: testpmd io-forwards between them, counts agree on both sides (${native ? 'native fast path' : 'QNH_NATIVE=0'})`, async () => {
      const a = join(dir, `a-${native}.sock`);
      const b = join(dir, `b-${native}.sock`);
      const s = new Serve(['--socket', a, '--socket', b, '--poll', 'busy', TRUST], undefined, native ? {} : { QNH_NATIVE: '0' });
      try {
        await s.ready([a, b]);
        // --tx-first injects a burst on each port; io mode then bounces frames
        // port0 <-> port1 through our patch forever.
        const r = await runTestpmd({
          vdevs: [`net_virtio_user0,path=${a},queues=1`, `net_virtio_user1,path=${b},queues=1`],
          forwardMode: 'io', lcores: '0@1,1@0', prefix: `qnh-bounce-${native}`, extra: ['--tx-first'],
        }, 2);
        const { final } = await s.stop();
        const [p0, p1] = r.ports;
        assert.ok(p0 && p1, r.output.slice(-2000));
        assert.ok(p0.rxPackets > 1000, `bounced only ${p0.rxPackets} frames`);
        // Inside the back-end nothing is lost: what one guest sent, the other received.
        assert.equal(final[0]!.txFrames, final[1]!.rxFrames + final[0]!.txDropped);
        assert.equal(final[1]!.txFrames, final[0]!.rxFrames + final[1]!.txDropped);
        assert.equal(final[0]!.txDropped + final[1]!.txDropped, 0, 'a patched pair is lossless (back-pressure)');
        // testpmd posts one descriptor per frame on both rings, and every frame
        // of a port carries the same MACs: after each run's first frame the
        // native fast path moves them (the first of each batch is decided in
        // TypeScript).
        for (const p of final) {
          if (native && process.env.QNH_NATIVE !== '0') assert.ok(p.txNative > p.txFrames * 0.5, `native fast path moved ${p.txNative} of ${p.txFrames}`);
          else assert.equal(p.txNative, 0, 'QNH_NATIVE=0: nothing goes native');
        }
        // And it matches what testpmd saw on both ports.
        assertCounts(final[0]!.txFrames, p0.txPackets, 'port 0 TX');
        assertCounts(final[1]!.txFrames, p1.txPackets, 'port 1 TX');
        assertCounts(p0.rxPackets, final[0]!.rxFrames, 'port 0 RX');
        assertCounts(p1.rxPackets, final[1]!.rxFrames, 'port 1 RX');
      } finally {
        await s.stop();
      }
    });
  }

  it('txonly on one patched port, rxonly on the other (two testpmd processes): counts agree end to end', async () => {
    const a = join(dir, 'tx.sock');
    const b = join(dir, 'rx.sock');
    const s = new Serve(['--socket', a, '--socket', b, TRUST]);
    try {
      await s.ready([a, b]);
      // The receiver first, so the sender's frames have buffers to land in.
      const rx = new Testpmd({ vdevs: [`net_virtio_user0,path=${b},queues=1`], forwardMode: 'rxonly', lcores: '0@1,1@1', prefix: 'qnh-rxonly' });
      assert.ok(await rx.waitFor(/Rx-pps/, 60000), rx.output().slice(-2000));
      const sent = await runTestpmd({ vdevs: [`net_virtio_user0,path=${a},queues=1`], forwardMode: 'txonly', lcores: '0@0,1@0', prefix: 'qnh-txonly' }, 2);
      await new Promise((r) => setTimeout(r, 500));
      const got = await rx.stop();
      const { final } = await s.stop();
      const tx = sent.ports[0]!.txPackets;
      assert.ok(tx > 10000, `sent only ${tx}`);
      assertCounts(final[0]!.txFrames, tx, 'taken from the sender');
      // Lossless patch: the receiver got everything the back-end took, less what it dropped for want of buffers.
      assert.equal(final[0]!.txFrames, final[1]!.rxFrames + final[0]!.txDropped);
      assert.equal(got.ports[0]!.rxPackets, final[1]!.rxFrames, 'testpmd rxonly counted what the back-end delivered');
    } finally {
      await s.stop();
    }
  });

  it('without --allow-unsealed-memory, DPDK\'s unsealable memory is refused with a clear reason', async () => {
    const sock = join(dir, 'sealed.sock');
    const s = new Serve(['--socket', sock]);
    try {
      await s.ready([sock]);
      const refused = /not sealed against shrinking \(F_SEAL_SHRINK\) and cannot be sealed/;
      const r = await runTestpmd({ vdevs: [`net_virtio_user0,path=${sock},queues=1`], forwardMode: 'txonly', lcores: '0@1,1@0', prefix: 'qnh-unsealed' }, 1, () => refused.test(s.log()));
      const { final } = await s.stop();
      assert.ok(r.ports[0]!.txPackets <= 512, 'nothing beyond the first ring was taken');
      assert.equal(final[0]!.txFrames, 0);
      assert.match(s.log(), refused);
    } finally {
      await s.stop();
    }
  });

  it('multiqueue: 2 queue pairs, txonly over both TX queues', async () => {
    const sock = join(dir, 'mq.sock');
    const s = new Serve(['--socket', sock, '--queues', '2', '--poll', 'busy', TRUST]);
    try {
      await s.ready([sock]);
      const r = await runTestpmd({ vdevs: [`net_virtio_user0,path=${sock},queues=2`], forwardMode: 'txonly', queues: 2, lcores: '0@1,1@0', prefix: 'qnh-mq' }, 2);
      const { final } = await s.stop();
      const sent = r.ports[0]!.txPackets;
      assert.ok(sent > 10000, `testpmd sent only ${sent}`);
      assertCounts(final[0]!.txFrames, sent, 'frames taken from both TX queues');
    } finally {
      await s.stop();
    }
  });
});
