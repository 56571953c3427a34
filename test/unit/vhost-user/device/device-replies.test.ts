// The vhost-user device's replies and REPLY_ACK handling, driven in-process
// by our front-end over a socketpair (sessions: test/lib/device-session.ts).
import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import { closeFd } from '../../../../src/sys/libc.js';
import * as F from '../../../lib/frontend-codec.js';
import { Feature, featureBit, hasFeature, ProtoFeature, Req } from '../../../../src/vhost-user/protocol/index.js';
import { negotiated, withSession } from '../../../lib/device-session.js';
import { DEFAULT_PROTOCOL_FEATURES, makeEventfd, VhostFrontend } from '../../../lib/vhost-frontend.js';

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
