// The vhost-user device's fds: every fd received closed exactly once, and the
// socket layer's buffers kept alive under GC pressure.
import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import { openSync } from 'node:fs';
import { describe, it } from 'node:test';
import { closeFd } from '../../../../src/sys/libc.js';
import * as F from '../../../lib/frontend-codec.js';
import { Req } from '../../../../src/vhost-user/protocol/index.js';
import { negotiated, session, withSession } from '../../../lib/device-session.js';
import { fdCount, fdList, fdOpen, memfdCreate, pipe } from '../../../lib/vhost-frontend.js';

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
