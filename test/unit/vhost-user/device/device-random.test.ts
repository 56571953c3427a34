// The vhost-user device against seeded random messages, in-process: each one
// answered, acked or ending the connection, and no fd leaked.
import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import { closeFd } from '../../../../src/sys/libc.js';
import { Req } from '../../../../src/vhost-user/protocol/index.js';
import { negotiated, withSession } from '../../../lib/device-session.js';
import { fdCount, makeEventfd } from '../../../lib/vhost-frontend.js';

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
