// The vhost-user device's ring life cycle: which data path calls each order
// of setup messages makes (sessions: test/lib/device-session.ts).
import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import { closeFd } from '../../../../src/sys/libc.js';
import * as F from '../../../lib/frontend-codec.js';
import { Req } from '../../../../src/vhost-user/protocol/index.js';
import { effective, negotiated, session, withSession } from '../../../lib/device-session.js';
import { fdOpen, GuestRing, makeEventfd, VhostFrontend } from '../../../lib/vhost-frontend.js';

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
