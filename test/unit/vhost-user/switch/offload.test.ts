// The switch with offloads, on mock guest rings: a GSO frame passes with its
// header to a guest that negotiated TSO, is cut into checked plain frames for
// one that did not, hostile or unnegotiated headers are dropped and counted,
// and the native fast path stops in front of offload frames.
import assert from 'node:assert/strict';
import { test } from 'node:test';
import type { QueueSpec } from '../../../../src/vhost-user/dataplane/api.js';
import { GuestTxPipe } from '../../../../src/vhost-user/dataplane/pipes.js';
import { WorkerPort } from '../../../../src/vhost-user/dataplane/port.js';
import { SwitchCore } from '../../../../src/vhost-user/dataplane/switch-core.js';
import { VEB } from '../../../../src/vhost-user/switch/forwarding.js';
import { CAN_ALL, F_NEEDS_CSUM, GSO_TCPV4, GSO_TCPV6, VnetHeader } from '../../../../src/vhost-user/switch/offload.js';
import { MockGuest, MockVirtq } from '../../../lib/mock-driver.js';
import { sum16, tcpChecksumOk, tcpFrame } from '../../../lib/tcp-frames.js';

const BUF = 0x100000;
const RXBUF = BUF + 0x200000;
const RX_SIZE = 0x11000; // header + a 64 KiB frame
const MAC = (n: number): number[] => [0x52, 0x54, 0, 0, 0, n];
const macNum = (n: number): number => 0x525400000000 + n;

interface G { port: WorkerPort; rx: MockVirtq; tx: MockVirtq; g: MockGuest; sent: number }

function guest(sw: SwitchCore, id: number, offloads: number): G {
  const g = new MockGuest([{ gpa: 0, size: 0x10000, ua: 0x7f0000000000 }, { gpa: BUF, size: 0x400000, ua: 0x7f1000000000 }]);
  const port = new WorkerPort(id, 1);
  port.mem = g.mem;
  const drv = [MockVirtq.at(g, 64, 0x1000), MockVirtq.at(g, 64, 0x6000)];
  for (let q = 0; q < 2; q++) {
    const spec: QueueSpec = {
      size: 64, desc: drv[q]!.descUA, avail: drv[q]!.availUA, used: drv[q]!.usedUA, lastAvail: 0, eventIdx: true, indirect: true,
      mrgRxbuf: true, hdrLen: 12, kickFd: -1, callFd: -1, enabled: true, logAll: false, logUsedGpa: -1, sendOffloads: offloads, recvOffloads: offloads,
    };
    port.startQueue(q, spec);
  }
  sw.ports.set(id, port);
  sw.topo.set(id, VEB);
  sw.fdb.learn(macNum(id), id, sw.now);
  for (let i = 0; i < 48; i++) drv[0]!.addChain([{ addr: RXBUF + RX_SIZE * i, len: RX_SIZE, write: true }]);
  return { port, rx: drv[0]!, tx: drv[1]!, g, sent: 0 };
}

function send(a: G, h: VnetHeader | null, frame: Uint8Array): void {
  const gpa = BUF + 0x11000 * a.sent++;
  const hb = new Uint8Array(12);
  h?.write(hb, 0);
  a.g.write(gpa, hb);
  a.g.write(gpa + 12, frame);
  // Header and frame in separate descriptors, as Linux sends a GSO skb.
  a.tx.addChain([{ addr: gpa, len: 12 }, { addr: gpa + 12, len: frame.length }]);
}

function received(b: G): { hdr: VnetHeader; frame: Buffer }[] {
  const used = b.rx.takeUsed();
  return used.map((u) => {
    const gpa = RXBUF + RX_SIZE * u.id;
    const hdr = new VnetHeader();
    hdr.read(b.g.read(gpa, 12), 0);
    return { hdr, frame: Buffer.from(b.g.read(gpa + 12, u.len - 12)) };
  });
}

function setup(): { sw: SwitchCore; a: G; b: G; c: G; run: () => void } {
  const sw = new SwitchCore(() => undefined);
  sw.now = Date.now();
  const a = guest(sw, 1, CAN_ALL), b = guest(sw, 2, CAN_ALL), c = guest(sw, 3, 0);
  sw.refreshTopology();
  const pipe = new GuestTxPipe(sw, a.port, a.port.queues[1]!);
  return { sw, a, b, c, run: () => { for (let k = 0; k < 10; k++) pipe.run(); sw.flush(); } };
}

const gsoHeader = (f: ReturnType<typeof tcpFrame>, type: number, mss: number): VnetHeader =>
  Object.assign(new VnetHeader(), { flags: F_NEEDS_CSUM, gsoType: type, gsoSize: mss, hdrLen: f.hdrEnd, csumStart: f.l4, csumOffset: 16 });

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
