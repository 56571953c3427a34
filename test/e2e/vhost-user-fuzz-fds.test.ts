// Hostile fds on port 1 of a real `vhost-user serve` (see hostile-bench.ts):
// a kick fd that cannot be polled, call fds whose write blocks, a flood of
// fd-carrying messages. Each once killed or froze the back-end.
import assert from 'node:assert/strict';
import { openSync } from 'node:fs';
import { describe, it } from 'node:test';
import { closeFd } from '../../src/sys/libc.js';
import { setNonBlocking } from '../../src/sys/unix-socket.js';
import * as F from '../lib/frontend-codec.js';
import { Req } from '../../src/vhost-user/protocol/index.js';
import { Bench, benchDir, collect, range } from '../lib/hostile-bench.js';
import { eventfdAdd, fdCount, makeEventfd, sleep, testFrame } from '../lib/vhost-frontend.js';

describe('vhost-user back-end against hostile front-ends: fds', () => {
  const dir = benchDir();

  // Regression (fixed in fe56fbd); before it: worker.ts rewatch() -> poller.ts watchReadable():
  // koffi.node.poll on a non-pollable fd aborts the process (FATAL ERROR: Error::New
  // napi_get_last_error_info) instead of throwing
  it('a kick fd that cannot be polled (/dev/null) in event mode', async () => {
    const bench = await Bench.start(dir(), 'kick', 'event');
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
      const bench = await Bench.start(dir(), `call-${reblock}`, 'event');
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

  // Regression (fixed in fe56fbd); before it: connection.ts onReadable() drains the socket into an
  // unbounded queue while process() awaits the worker, so one front-end makes the process hold
  // thousands of received fds at once (measured ~5000 for 20000 SET_VRING_CALL)
  it('a flood of fd-carrying messages is read no faster than it is handled', async (t) => {
    const bench = await Bench.start(dir(), 'flood', 'event');
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
});
