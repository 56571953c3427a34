import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import * as F from '../../../lib/frontend-codec.js';
import {
  MAX_PAYLOAD_SIZE, MessageReader, NATIVE_LE, ProtocolError, Req, decodeHeader, decodeRequest,
  encodeConfigReply, encodeU64Reply, encodeVringStateReply, featureBit, Feature, reqName, requestFds,
  type Request,
} from '../../../../src/vhost-user/protocol/index.js';

// Every fixture below is written out by hand from the layouts in
// docs/interop/vhost-user.rst (little-endian, as on every host we run on).
const hex = (s: string): Uint8Array => Uint8Array.from(Buffer.from(s.replace(/\s+/g, ''), 'hex'));
const toHex = (b: Uint8Array): string => Buffer.from(b).toString('hex');

/** Decode a whole request fixture the way the connection layer will. */
function decode(bytes: Uint8Array, fds: number[] = []): Request {
  const h = decodeHeader(bytes);
  assert.equal(bytes.length, 12 + h.size, 'fixture length matches its header');
  return decodeRequest(h.request, h.flags, bytes.subarray(12), fds);
}
function rejects(fn: () => unknown, reason: string, re?: RegExp): void {
  assert.throws(fn, (e: unknown) => {
    assert.ok(e instanceof ProtocolError, `expected ProtocolError, got ${String(e)}`);
    assert.equal(e.reason, reason, e.message);
    if (re) assert.match(e.message, re);
    return true;
  });
}

const MEM_TABLE_8 = hex(`
  05000000 01000000 08010000  08000000 00000000
  0000000000000000 0000004000000000 00000000007f0000 0000000000000000
  0000004000000000 0000004000000000 00000040007f0000 0010000000000000
  0000008000000000 0000004000000000 00000080007f0000 0020000000000000
  000000c000000000 0000004000000000 000000c0007f0000 0030000000000000
  0000000001000000 0000004000000000 00000000017f0000 0040000000000000
  0000004001000000 0000004000000000 00000040017f0000 0050000000000000
  0000008001000000 0000004000000000 00000080017f0000 0060000000000000
  000000c001000000 0000004000000000 000000c0017f0000 0070000000000000`);
const G = 0x40000000n;
const REGIONS_8 = [
  { guestPhysAddr: 0n, memorySize: G, userspaceAddr: 0x7f0000000000n, mmapOffset: 0x0n, fd: 100 },
  { guestPhysAddr: 0x40000000n, memorySize: G, userspaceAddr: 0x7f0040000000n, mmapOffset: 0x1000n, fd: 101 },
  { guestPhysAddr: 0x80000000n, memorySize: G, userspaceAddr: 0x7f0080000000n, mmapOffset: 0x2000n, fd: 102 },
  { guestPhysAddr: 0xc0000000n, memorySize: G, userspaceAddr: 0x7f00c0000000n, mmapOffset: 0x3000n, fd: 103 },
  { guestPhysAddr: 0x100000000n, memorySize: G, userspaceAddr: 0x7f0100000000n, mmapOffset: 0x4000n, fd: 104 },
  { guestPhysAddr: 0x140000000n, memorySize: G, userspaceAddr: 0x7f0140000000n, mmapOffset: 0x5000n, fd: 105 },
  { guestPhysAddr: 0x180000000n, memorySize: G, userspaceAddr: 0x7f0180000000n, mmapOffset: 0x6000n, fd: 106 },
  { guestPhysAddr: 0x1c0000000n, memorySize: G, userspaceAddr: 0x7f01c0000000n, mmapOffset: 0x7000n, fd: 107 },
];
const FDS_8 = [100, 101, 102, 103, 104, 105, 106, 107];
// index 1, flags 0, desc, USED, avail, log (wire order puts used before avail)
const VRING_ADDR = hex(`09000000 01000000 28000000  01000000 00000000
  00005634127f0000 00205634127f0000 00105634127f0000 0020452301000000`);
const KICK_FD = hex('0c000000 01000000 08000000 0200000000000000');
const KICK_NOFD = hex('0c000000 01000000 08000000 0201000000000000');
const GET_FEATURES = hex('01000000 01000000 00000000');
/** SET_MEM_TABLE with one region given as 64 hex digits. */
const table1 = (region: string): Uint8Array => hex(`05000000 01000000 28000000 01000000 00000000 ${region}`);

const region4k = { guestPhysAddr: 0n, memorySize: 4096n, userspaceAddr: 0x7f0000000000n, mmapOffset: 0n };
/** One valid payload (and fd count) for every request id in Req. */
const SAMPLES: Array<[number, Uint8Array, number]> = [
  ...[Req.GET_FEATURES, Req.SET_OWNER, Req.RESET_OWNER, Req.GET_PROTOCOL_FEATURES, Req.GET_QUEUE_NUM,
    Req.RESET_DEVICE, Req.GET_MAX_MEM_SLOTS, Req.GET_STATUS].map((id): [number, Uint8Array, number] => [id, new Uint8Array(0), 0]),
  [Req.SET_FEATURES, F.u64(featureBit(32)), 0], [Req.SET_PROTOCOL_FEATURES, F.u64(0xbn), 0],
  [Req.SET_MEM_TABLE, F.memTable([region4k]), 1], [Req.SET_MEM_TABLE, MEM_TABLE_8.subarray(12), 8],
  [Req.SET_LOG_BASE, F.logBase(4096n, 0n), 1], [Req.SET_LOG_FD, new Uint8Array(0), 1],
  [Req.SET_VRING_NUM, F.vringState(0, 256), 0], [Req.SET_VRING_BASE, F.vringState(1, 0), 0],
  [Req.GET_VRING_BASE, F.vringState(1, 0), 0], [Req.SET_VRING_ADDR, VRING_ADDR.subarray(12), 0],
  [Req.SET_VRING_KICK, F.vringFdMsg(0, false), 1], [Req.SET_VRING_CALL, F.vringFdMsg(1, true), 0],
  [Req.SET_VRING_ERR, F.vringFdMsg(1, false), 1], [Req.SET_VRING_ENABLE, F.vringState(0, 1), 0],
  [Req.SEND_RARP, F.rarp(hex('525400123456')), 0], [Req.NET_SET_MTU, F.u64(1500n), 0],
  [Req.SET_BACKEND_REQ_FD, new Uint8Array(0), 1], [Req.IOTLB_MSG, new Uint8Array(32), 0],
  [Req.SET_VRING_ENDIAN, F.vringState(0, 0), 0], [Req.GET_CONFIG, F.configMsg(0, 0, 8), 0],
  [Req.SET_CONFIG, F.configMsg(6, 1, hex('0100')), 0], [Req.GET_INFLIGHT_FD, new Uint8Array(24), 0],
  [Req.SET_INFLIGHT_FD, new Uint8Array(24), 1], [Req.ADD_MEM_REG, F.memRegionMsg(region4k), 1],
  [Req.REM_MEM_REG, F.memRegionMsg(region4k), 0], [Req.SET_STATUS, F.u64(0xfn), 0],
];

describe('vhost-user protocol: byte fixtures', { skip: !NATIVE_LE && 'fixtures are little-endian' }, () => {
  it('decodes the 276-byte SET_MEM_TABLE with 8 regions, fds in order', () => {
    assert.equal(MEM_TABLE_8.length, 276);
    assert.deepEqual(decode(MEM_TABLE_8, FDS_8), { kind: 'SET_MEM_TABLE', needReply: false, regions: REGIONS_8 });
    assert.equal(toHex(F.encodeRequest(Req.SET_MEM_TABLE, F.memTable(REGIONS_8))), toHex(MEM_TABLE_8));
  });
  it('decodes SET_VRING_ADDR in desc/used/avail order', () => {
    const want = { index: 1, flags: 0, desc: 0x7f1234560000n, used: 0x7f1234562000n, avail: 0x7f1234561000n, log: 0x123452000n };
    assert.deepEqual(decode(VRING_ADDR), { kind: 'SET_VRING_ADDR', needReply: false, ...want });
    assert.equal(toHex(F.encodeRequest(Req.SET_VRING_ADDR, F.vringAddr(want))), toHex(VRING_ADDR));
  });
  it('encodes the GET_FEATURES reply (flags 0x5, u64 with bits >= 32)', () => {
    const features = featureBit(Feature.VERSION_1) | featureBit(Feature.PROTOCOL_FEATURES) | featureBit(Feature.MRG_RXBUF);
    const reply = encodeU64Reply(Req.GET_FEATURES, features);
    assert.equal(toHex(reply), toHex(hex('01000000 05000000 08000000 0080004001000000')));
    const r = F.decodeReply(reply);
    assert.deepEqual([r.request, r.flags, r.size, r.length, F.replyU64(r)], [1, 5, 8, 20, 0x140008000n]);
    assert.deepEqual(decode(GET_FEATURES), { kind: 'GET_FEATURES', needReply: false });
  });
  it('decodes SET_VRING_KICK with an fd and with NOFD', () => {
    assert.deepEqual(decode(KICK_FD, [42]), { kind: 'SET_VRING_KICK', needReply: false, index: 2, nofd: false, fd: 42 });
    assert.deepEqual(decode(KICK_NOFD, []), { kind: 'SET_VRING_KICK', needReply: false, index: 2, nofd: true });
    assert.equal(toHex(F.encodeRequest(Req.SET_VRING_KICK, F.vringFdMsg(2, true))), toHex(KICK_NOFD));
    const call = decode(hex('0d000000 01000000 08000000 ff00000000000000'), [9]);
    assert.deepEqual(call, { kind: 'SET_VRING_CALL', needReply: false, index: 255, nofd: false, fd: 9 });
  });
  it('round-trips a header with NEED_REPLY', () => {
    const bytes = hex('03000000 09000000 00000000');
    assert.deepEqual(decodeHeader(bytes), { request: Req.SET_OWNER, flags: 9, size: 0 });
    assert.equal(toHex(F.encodeRequest(Req.SET_OWNER, undefined, { needReply: true })), toHex(bytes));
    assert.deepEqual(decode(bytes), { kind: 'SET_OWNER', needReply: true });
    const padded = hex(`ffff ${toHex(VRING_ADDR)}`);
    assert.deepEqual(decodeHeader(padded, 2), { request: 9, flags: 1, size: 40 });
  });
  it('encodes GET_VRING_BASE and GET_CONFIG replies', () => {
    assert.equal(toHex(encodeVringStateReply(Req.GET_VRING_BASE, 1, 0x1234)), '0b000000050000000800000001000000' + '34120000');
    const cfg = encodeConfigReply(0, 0, hex('525400123456 0100'));
    assert.equal(toHex(cfg), toHex(hex('18000000 05000000 14000000 00000000 08000000 00000000 525400123456 0100')));
    assert.deepEqual(F.replyVringState(F.decodeReply(encodeVringStateReply(11, 3, 7))), { index: 3, num: 7 });
  });
  it('decodes the small fixed-layout requests', () => {
    assert.deepEqual(decode(hex('13000000 01000000 08000000 5254001234560000')),
      { kind: 'SEND_RARP', needReply: false, mac: hex('525400123456') });
    assert.deepEqual(decode(hex('12000000 09000000 08000000 03000000 01000000')),
      { kind: 'SET_VRING_ENABLE', needReply: true, index: 3, enable: true });
    assert.deepEqual(decode(hex('06000000 01000000 10000000 0000100000000000 0000000000000000'), [5]),
      { kind: 'SET_LOG_BASE', needReply: false, mmapSize: 0x100000n, mmapOffset: 0n, fd: 5 });
    assert.deepEqual(decode(hex('14000000 09000000 08000000 dc05000000000000')), { kind: 'NET_SET_MTU', needReply: true, mtu: 1500n });
    assert.deepEqual(decode(hex('27000000 01000000 08000000 0f00000000000000')), { kind: 'SET_STATUS', needReply: false, status: 15 });
    assert.deepEqual(decode(hex('19000000 01000000 0e000000 06000000 02000000 00000000 0100')),
      { kind: 'SET_CONFIG', needReply: false, offset: 6, flags: 0, data: hex('0100') });
    const rem = { guestPhysAddr: 0x100000n, memorySize: 0x200000n, userspaceAddr: 0x7f0000100000n, mmapOffset: 0n };
    const remBytes = hex(`26000000 01000000 28000000 0000000000000000
      0000100000000000 0000200000000000 0000100000 7f0000 0000000000000000`);
    assert.deepEqual(decode(remBytes), { kind: 'REM_MEM_REG', needReply: false, region: rem });
    assert.deepEqual(decode(remBytes, [3]), { kind: 'REM_MEM_REG', needReply: false, region: rem, fd: 3 });
  });
});

describe('vhost-user protocol: rejections', { skip: !NATIVE_LE && 'fixtures are little-endian' }, () => {
  it('rejects bad versions, undefined flag bits and REPLY on a request', () => {
    for (const f of ['00000000', '02000000', '03000000', '06000000']) {
      rejects(() => decodeHeader(hex(`01000000 ${f} 00000000`)), 'version');
    }
    rejects(() => decodeHeader(hex('01000000 11000000 00000000')), 'flags', /undefined header flag/);
    rejects(() => decodeHeader(hex('01000000 05000000 00000000')), 'flags', /GET_FEATURES: REPLY flag set on a request/);
    rejects(() => decodeRequest(1, 5, new Uint8Array(0), []), 'flags');
    rejects(() => F.decodeReply(GET_FEATURES), 'flags'); // a request where a reply belongs
    rejects(() => decodeHeader(hex('01000000 01000000 000000')), 'truncated');
  });
  it('caps the payload size before anything is allocated', () => {
    assert.equal(MAX_PAYLOAD_SIZE, 268);
    assert.equal(decodeHeader(hex('18000000 01000000 0c010000')).size, 268);
    rejects(() => decodeHeader(hex('18000000 01000000 0d010000')), 'oversize', /GET_CONFIG: payload size 269/);
    rejects(() => decodeHeader(hex('05000000 01000000 ffffffff')), 'oversize');
    rejects(() => decodeHeader(hex('05000000 01000000 28010000')), 'oversize'); // a 9-region table
  });
  it('rejects nregions 0 and 9', () => {
    rejects(() => decode(hex('05000000 01000000 08000000 00000000 00000000')), 'value', /SET_MEM_TABLE: nregions 0/);
    const nine = new Uint8Array(8 + 9 * 32);
    nine.set(hex('09000000'));
    rejects(() => decodeRequest(Req.SET_MEM_TABLE, 1, nine, [1, 2, 3, 4, 5, 6, 7, 8, 9]), 'value', /nregions 9/);
  });
  it('rejects fd counts that do not match the request', () => {
    rejects(() => decode(MEM_TABLE_8, FDS_8.slice(1)), 'fds', /SET_MEM_TABLE: 7 fd\(s\) attached, expected 8/);
    rejects(() => decode(MEM_TABLE_8, [...FDS_8, 108]), 'fds');
    rejects(() => decode(KICK_FD, []), 'fds');
    rejects(() => decode(KICK_NOFD, [4]), 'fds');
    rejects(() => decode(GET_FEATURES, [4]), 'fds');
    rejects(() => decode(VRING_ADDR, [4]), 'fds');
    rejects(() => decode(hex('06000000 01000000 10000000 0000100000000000 0000000000000000')), 'fds');
    rejects(() => decodeRequest(Req.SET_BACKEND_REQ_FD, 1, new Uint8Array(0), []), 'fds');
    const reg = F.memRegionMsg({ guestPhysAddr: 0n, memorySize: 4096n, userspaceAddr: 0n, mmapOffset: 0n });
    rejects(() => decodeRequest(Req.ADD_MEM_REG, 1, reg, []), 'fds');
    rejects(() => decodeRequest(Req.ADD_MEM_REG, 1, reg, [1, 2]), 'fds');
    rejects(() => decodeRequest(Req.REM_MEM_REG, 1, reg, [1, 2]), 'fds');
  });
  it('rejects empty regions and ranges that wrap past 2^64', () => {
    const ok = '00f0ffffffffffff ff0f000000000000 0000000000000000 0000000000000000'; // ends at 2^64-1
    assert.equal((decode(table1(ok), [1]) as { regions: unknown[] }).regions.length, 1);
    rejects(() => decode(table1('00f0ffffffffffff 0010000000000000 0000000000000000 0000000000000000'), [1]), 'overflow', /region 0 guest_phys_addr/);
    rejects(() => decode(table1('0000000000000000 0010000000000000 00f0ffffffffffff 0000000000000000'), [1]), 'overflow', /userspace_addr/);
    rejects(() => decode(table1('0000000000000000 0010000000000000 0000000000000000 00f0ffffffffffff'), [1]), 'overflow', /mmap_offset/);
    rejects(() => decode(table1('0000100000000000 0000000000000000 0000000000000000 0000000000000000'), [1]), 'value', /size 0/);
    rejects(() => decode(hex('06000000 01000000 10000000 0000000000000000 0000000000000000'), [5]), 'value', /mmap_size is 0/);
  });
  it('rejects out-of-range field values', () => {
    const st = (id: number, index: number, num: number) => decodeRequest(id, 1, F.vringState(index, num), []);
    rejects(() => st(Req.SET_VRING_ENABLE, 0, 2), 'value', /enable 2/);
    rejects(() => st(Req.SET_VRING_ENDIAN, 0, 7), 'value');
    const addr = { index: 0, desc: 0x1000n, used: 0x3000n, avail: 0x2000n };
    rejects(() => decodeRequest(Req.SET_VRING_ADDR, 1, F.vringAddr({ ...addr, flags: 2 }), []), 'value', /vring flags/);
    rejects(() => decodeRequest(Req.SET_VRING_ADDR, 1, F.vringAddr({ ...addr, desc: 0x1008n }), []), 'value', /desc/);
    rejects(() => decodeRequest(Req.SET_VRING_ADDR, 1, F.vringAddr({ ...addr, used: 0x3002n }), []), 'value', /used/);
    rejects(() => decodeRequest(Req.SET_VRING_ADDR, 1, F.vringAddr({ ...addr, avail: 0x2001n }), []), 'value', /avail/);
    rejects(() => decode(hex('0c000000 01000000 08000000 0202000000000000'), [1]), 'value', /undefined bits/);
    rejects(() => decode(hex('27000000 01000000 08000000 0001000000000000')), 'value', /status/);
    rejects(() => decodeRequest(Req.GET_CONFIG, 1, F.configMsg(0, 0, 257), []), 'value', /257/);
    rejects(() => decodeRequest(Req.GET_CONFIG, 1, F.configMsg(0, 2, 8), []), 'value', /flags 2/);
    rejects(() => decodeRequest(Req.SET_CONFIG, 1, F.configMsg(250, 0, 8), []), 'value', /250\+8/);
  });
  it('rejects truncated and over-long payloads for every request kind', () => {
    for (const [id, payload, nfds] of SAMPLES) {
      const fds = Array.from({ length: nfds }, (_, i) => 10 + i);
      decodeRequest(id, 1, payload, fds); // the sample itself is valid
      for (let len = 0; len < payload.length; len++) {
        rejects(() => decodeRequest(id, 1, payload.subarray(0, len), fds), 'size', new RegExp(`^${reqName(id)}: `));
      }
      const longer = new Uint8Array(payload.length + 1);
      longer.set(payload);
      rejects(() => decodeRequest(id, 1, longer, fds), 'size');
    }
  });
  it('decodes unknown ids as UNKNOWN and names them for logs', () => {
    const u = decodeRequest(99, 9, hex('0102'), [7]);
    assert.deepEqual(u, { kind: 'UNKNOWN', needReply: true, request: 99, payload: hex('0102'), fds: [7] });
    assert.deepEqual(requestFds(u), [7]);
    assert.equal(decodeRequest(28, 1, new Uint8Array(0), []).kind, 'UNKNOWN');
    assert.deepEqual([reqName(28), reqName(99), reqName(Req.GET_MAX_MEM_SLOTS)], ['POSTCOPY_ADVISE', 'UNKNOWN(99)', 'GET_MAX_MEM_SLOTS']);
    assert.deepEqual(requestFds(decode(MEM_TABLE_8, FDS_8)), FDS_8);
    assert.deepEqual(requestFds(decode(KICK_NOFD)), []);
  });
});


type Pulled = { request: number; fds: readonly number[]; payload: string };
function drain(r: MessageReader, out: Pulled[] = []): Pulled[] {
  for (let m; (m = r.next()); ) out.push({ request: m.request, fds: m.fds, payload: toHex(m.payload) });
  return out;
}
/** Feed [bytes, fds] chunks as recvmsg would return them, pulling after each. */
function pushAll(r: MessageReader, chunks: Array<[Uint8Array, number[]]>): Pulled[] {
  const out: Pulled[] = [];
  for (const [b, fds] of chunks) {
    r.push(b, fds);
    drain(r, out);
  }
  return out;
}
const STREAM = hex(toHex(GET_FEATURES) + toHex(VRING_ADDR) + toHex(KICK_FD)); // 12 + 52 + 20 bytes
const STREAM_MSGS = [
  { request: 1, fds: [], payload: '' },
  { request: 9, fds: [], payload: toHex(VRING_ADDR.subarray(12)) },
  { request: 12, fds: [42], payload: '0200000000000000' },
];

describe('vhost-user protocol: MessageReader', { skip: !NATIVE_LE && 'fixtures are little-endian' }, () => {
  it('splits coalesced messages and gives the fds to the last header in the chunk', () => {
    assert.deepEqual(pushAll(new MessageReader(), [[STREAM, [42]]]), STREAM_MSGS);
  });
  it('reassembles byte-by-byte delivery; fds ride with the chunk holding the header start', () => {
    const chunks: Array<[Uint8Array, number[]]> = [...STREAM].map((b, i) => [Uint8Array.of(b), i === 64 ? [42] : []]);
    assert.deepEqual(pushAll(new MessageReader(), chunks), STREAM_MSGS);
    const split: Array<[Uint8Array, number[]]> = [[STREAM.subarray(0, 69), [42]], [STREAM.subarray(69), []]];
    assert.deepEqual(pushAll(new MessageReader(), split), STREAM_MSGS);
  });
  it('copies payloads so the recv buffer can be reused', () => {
    const r = new MessageReader();
    const buf = STREAM.slice();
    r.push(buf, [42]);
    buf.fill(0);
    assert.deepEqual(drain(r), STREAM_MSGS);
  });
  it('refuses fds that arrive with no message start, and hands them back', () => {
    const r = new MessageReader();
    r.push(KICK_FD.subarray(0, 16), [1]);
    rejects(() => r.push(KICK_FD.subarray(16), [2]), 'fds', /start no message/);
    rejects(() => r.push(GET_FEATURES, [3]), 'fds'); // dead now: same error, fds adopted
    assert.deepEqual(r.drainFds().sort(), [1, 2, 3]);
    assert.deepEqual(r.drainFds(), []);
  });
  it('fails on an oversized header at once and never waits for its payload', () => {
    const r = new MessageReader();
    r.push(KICK_FD, [5]); // queued, not pulled
    rejects(() => r.push(hex('05000000 01000000 00100000'), [6]), 'oversize');
    assert.equal(r.next(), undefined);
    assert.deepEqual(r.drainFds().sort(), [5, 6]);
    rejects(() => new MessageReader().push(new Uint8Array(12), Array(9).fill(1)), 'fds', /9 fds/);
  });
  it('reads replies in reply mode and rejects requests there', () => {
    const r = new MessageReader('reply');
    r.push(hex(toHex(encodeU64Reply(1, 7n)) + toHex(encodeVringStateReply(11, 0, 3)).slice(0, 10)));
    assert.equal(F.replyU64(r.next()!), 7n);
    assert.ok(r.midMessage);
    rejects(() => new MessageReader('reply').push(GET_FEATURES), 'flags');
  });
});

/** mulberry32: tiny seeded PRNG so failures reproduce. */
function prng(seed: number): () => number {
  return () => {
    seed = (seed + 0x6d2b79f5) | 0;
    let t = Math.imul(seed ^ (seed >>> 15), 1 | seed);
    t = (t + Math.imul(t ^ (t >>> 7), 61 | t)) ^ t;
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
  };
}
function onlyProtocolErrors(fn: () => void): boolean {
  try {
    fn();
    return true;
  } catch (e) {
    if (!(e instanceof ProtocolError)) throw e;
    return false;
  }
}

describe('vhost-user protocol: random input', () => {
  const rnd = prng(0x5eed);
  const int = (n: number) => Math.floor(rnd() * n);
  const bytes = (n: number) => Uint8Array.from({ length: n }, () => int(256));
  /** A sample payload with a few bytes flipped and sometimes resized. */
  const mutate = (p: Uint8Array): Uint8Array => {
    const q = int(8) === 0 ? bytes(int(300)) : Uint8Array.from({ length: Math.max(0, p.length + (int(6) === 0 ? int(5) - 2 : 0)) }, (_, i) => p[i] ?? int(256));
    for (let k = int(3); k > 0 && q.length > 0; k--) q[int(q.length)] = int(4) === 0 ? 0xff : int(256);
    return q;
  };

  it('decodeHeader and decodeRequest throw nothing but ProtocolError', () => {
    let accepted = 0;
    for (let i = 0; i < 4000; i++) {
      const b = bytes(int(40));
      onlyProtocolErrors(() => decodeHeader(b, int(b.length + 1), int(2) ? 'request' : 'reply'));
      const [id, sample, nfds] = int(10) === 0 ? [int(50), bytes(int(60)), int(3)] : SAMPLES[int(SAMPLES.length)]!;
      const fds = Array.from({ length: int(4) === 0 ? int(10) : nfds }, (_, k) => k + 3);
      const flags = [1, 9, 1, 9, int(2 ** 32)][int(5)]!;
      if (onlyProtocolErrors(() => decodeRequest(id, flags, mutate(sample), fds))) accepted++;
    }
    assert.ok(accepted > 400, `only ${accepted} random requests decoded: fuzzing too shallow`);
  });

  it('MessageReader throws nothing but ProtocolError and loses no fd', () => {
    for (let i = 0; i < 1500; i++) {
      const parts: Uint8Array[] = [];
      for (let k = int(6); k > 0; k--) {
        const [id, p] = SAMPLES[int(SAMPLES.length)]!;
        parts.push(int(12) === 0 ? bytes(int(30)) : F.encodeRequest(id, int(10) === 0 ? mutate(p) : p));
      }
      const stream = Uint8Array.from(parts.flatMap((p) => [...p]));
      const r = new MessageReader();
      const given: number[] = [];
      const got: number[] = [];
      let nextFd = 100;
      for (let pos = 0; pos < stream.length; ) {
        const n = 1 + int(40);
        const fds = Array.from({ length: int(5) === 0 ? int(10) : 0 }, () => nextFd++);
        given.push(...fds);
        const ok = onlyProtocolErrors(() => r.push(stream.subarray(pos, pos + n), fds));
        for (let m; (m = r.next()); ) got.push(...m.fds);
        pos += n;
        if (!ok) break;
      }
      got.push(...r.drainFds());
      assert.deepEqual(got.sort((a, b) => a - b), given, 'every fd pushed comes back exactly once');
    }
  });
});
