// The switch with offloads, on mock guest rings: a GSO frame passes with its
// header to a guest that negotiated TSO, is cut into checked plain frames for
// one that did not, hostile or unnegotiated headers are dropped and counted,
// and the native fast path stops in front of offload frames.
import assert from 'node:assert/strict';
import { test } from 'node:test';
import { GuestTxPipe } from '../../../../src/vhost-user/dataplane/pipes.js';
import { SwitchCore } from '../../../../src/vhost-user/dataplane/switch-core.js';
import { CAN_ALL, F_NEEDS_CSUM, GSO_TCPV4, GSO_TCPV6, VnetHeader } from '../../../../src/vhost-user/switch/offload.js';
import { gsoHeader, guestMac as MAC, OFFLOAD_BUF, offloadGuest, type OffloadGuest, receivedWithHeader as received, sendWithHeader as send } from '../../../lib/offload-guest.js';
import { sum16, tcpChecksumOk, tcpFrame } from '../../../lib/tcp-frames.js';

const BUF = OFFLOAD_BUF;

function setup(): { sw: SwitchCore; a: OffloadGuest; b: OffloadGuest; c: OffloadGuest; run: () => void } {
  const sw = new SwitchCore(() => undefined);
  sw.now = Date.now();
  const a = offloadGuest(sw, 1, CAN_ALL, true), b = offloadGuest(sw, 2, CAN_ALL, true), c = offloadGuest(sw, 3, 0, true);
  sw.refreshTopology();
  const pipe = new GuestTxPipe(sw, a.port, a.port.queues[1]!);
  return { sw, a, b, c, run: () => { for (let k = 0; k < 10; k++) pipe.run(); sw.flush(); } };
}

test('a 64 KiB GSO frame passes as it is, header included, to a guest with TSO', () => {
  const { a, b, c, run } = setup();
  const f = tcpFrame({ payload: 65535 - 14 - 20 - 32, tcpOpts: 12, dstMac: MAC(2), srcMac: MAC(1) });
  const h = gsoHeader(f, GSO_TCPV4, 1448);
  send(a, h, f.frame);
  run();
  const got = received(b);
  assert.equal(got.length, 1);
  assert.deepEqual(got[0]!.frame, f.frame);
  for (const k of ['flags', 'gsoType', 'gsoSize', 'hdrLen', 'csumStart', 'csumOffset'] as const) assert.equal(got[0]!.hdr[k], h[k], k);
  assert.equal(received(c).length, 0);
  assert.equal(a.port.stats.gsoPassed, 1);
  assert.equal(a.port.stats.gsoSegmented, 0);
  assert.equal(a.port.stats.txNative, 0);
  assert.equal(b.port.stats.rxFrames, 1);
});

test('to a guest without offloads the same frame arrives cut into checked segments', () => {
  for (const v6 of [false, true]) {
    const { a, c, run } = setup();
    const f = tcpFrame({ v6, payload: 20000, tcpOpts: 12, vlan: 5, flags: 0x18, dstMac: MAC(3), srcMac: MAC(1) });
    send(a, gsoHeader(f, v6 ? GSO_TCPV6 : GSO_TCPV4, 1400), f.frame);
    run();
    const got = received(c);
    assert.equal(got.length, Math.ceil(20000 / 1400));
    let payload = Buffer.alloc(0);
    got.forEach((s, i) => {
      assert.ok(s.hdr.plain && s.hdr.gsoSize === 0 && s.hdr.csumStart === 0, 'a plain header');
      assert.ok(tcpChecksumOk(s.frame, f.l3, f.l4, v6), `segment ${i} TCP checksum`);
      payload = Buffer.concat([payload, s.frame.subarray(f.hdrEnd)]);
    });
    assert.deepEqual(payload, f.payload);
    assert.equal(a.port.stats.gsoSegmented, 1);
    assert.equal(c.port.stats.rxFrames, got.length);
  }
});

test('a partial checksum is completed for a guest without GUEST_CSUM and passed to one with it', () => {
  const { sw, a, b, c, run } = setup();
  const f = tcpFrame({ payload: 700, dstMac: [0xff, 0xff, 0xff, 0xff, 0xff, 0xff], srcMac: MAC(1) });
  // What Linux leaves in the field: the folded pseudo-header sum.
  const pseudo = Buffer.from(f.frame);
  const len = Buffer.alloc(2);
  len.writeUInt16BE(f.frame.length - f.l4);
  pseudo.writeUInt16BE(sum16(f.frame.subarray(f.l3 + 12, f.l3 + 20), Buffer.from([0, 6]), len), f.l4 + 16);
  send(a, Object.assign(new VnetHeader(), { flags: F_NEEDS_CSUM, csumStart: f.l4, csumOffset: 16 }), pseudo);
  run();
  const toC = received(c), toB = received(b);
  assert.equal(toC.length, 1);
  assert.ok(tcpChecksumOk(toC[0]!.frame, f.l3, f.l4, false), 'completed for C');
  assert.equal(toB.length, 1);
  assert.equal(toB[0]!.hdr.flags, F_NEEDS_CSUM, 'B takes it partial');
  assert.deepEqual(toB[0]!.frame, pseudo, 'B gets the bytes as sent (completion was on a copy)');
  assert.equal(a.port.stats.csumCompleted, 1);
  void sw;
});

test('hostile or unnegotiated headers are dropped and counted; the next frame goes through', () => {
  const { sw, a, b, c, run } = setup();
  const f = tcpFrame({ payload: 3000, dstMac: MAC(2), srcMac: MAC(1) });
  const bad: Partial<VnetHeader>[] = [
    { gsoSize: 0 }, { hdrLen: 60000 }, { csumStart: 0xfff0 }, { gsoType: GSO_TCPV6 }, { gsoType: 3 }, { gsoSize: 5 },
  ];
  for (const x of bad) send(a, Object.assign(gsoHeader(f, GSO_TCPV4, 1448), x), f.frame);
  send(a, null, f.frame);
  run();
  assert.equal(a.port.stats.badOffload, bad.length);
  const got = received(b);
  assert.equal(got.length, 1, 'only the plain frame');
  assert.deepEqual(got[0]!.frame, f.frame);
  assert.equal(a.tx.takeUsed().length, bad.length + 1, 'every chain returned to the sender');
  // C negotiated nothing: its partial checksum is not believed.
  const cf = tcpFrame({ payload: 100, dstMac: MAC(2), srcMac: MAC(3) });
  send(c, Object.assign(new VnetHeader(), { flags: F_NEEDS_CSUM, csumStart: cf.l4, csumOffset: 16 }), cf.frame);
  new GuestTxPipe(sw, c.port, c.port.queues[1]!).run();
  sw.flush();
  assert.equal(c.port.stats.badOffload, 1);
  assert.equal(received(b).length, 0);
});

test('the native fast path stops in front of an offload frame; everything arrives in order', () => {
  const { a, b, run } = setup();
  const plain = (i: number): Buffer => { const x = tcpFrame({ payload: 64 + i, dstMac: MAC(2), srcMac: MAC(1) }).frame; return x; };
  const f = tcpFrame({ payload: 9000, dstMac: MAC(2), srcMac: MAC(1) });
  const want: Buffer[] = [];
  const one = (i: number): void => {
    const x = plain(i);
    // One descriptor per frame: what the fast path takes.
    const gpa = BUF + 0x11000 * a.sent++;
    a.g.write(gpa, new Uint8Array(12));
    a.g.write(gpa + 12, x);
    a.tx.addChain([{ addr: gpa, len: 12 + x.length }]);
    want.push(x);
  };
  for (let i = 0; i < 8; i++) one(i);
  const gpa = BUF + 0x11000 * a.sent++;
  const hb = new Uint8Array(12);
  gsoHeader(f, GSO_TCPV4, 1448).write(hb, 0);
  a.g.write(gpa, hb);
  a.g.write(gpa + 12, f.frame);
  a.tx.addChain([{ addr: gpa, len: 12 + f.frame.length }]);
  want.push(f.frame);
  for (let i = 8; i < 16; i++) one(i);
  run();
  const got = received(b);
  assert.deepEqual(got.map((g) => g.frame), want);
  assert.equal(got[8]!.hdr.gsoType, GSO_TCPV4);
  assert.ok(got.every((g, i) => i === 8 || g.hdr.plain));
  assert.equal(a.port.stats.gsoPassed, 1);
  assert.equal(a.port.stats.txFrames, 17);
  if (process.env.QNH_NATIVE !== '0') assert.ok(a.port.stats.txNative >= 8, `${a.port.stats.txNative} went native`);
});
