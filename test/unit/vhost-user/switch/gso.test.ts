// Software offloads on byte fixtures: partial checksum completion and TCP
// segmentation (IPv4/IPv6, options, VLAN, ECN/CWR, FIN/PSH, the last short
// segment), checked field by field against an independent checksum; hostile
// headers refused with their reason.
import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import { completeChecksum, segmentTcp } from '../../../../src/vhost-user/switch/gso.js';
import { readFileSync } from 'node:fs';
import { join } from 'node:path';
import { ROOT } from '../../../lib/paths.js';
import { DST4, SRC4, sum16, tcpChecksumOk, tcpFrame, type Spec } from '../../../lib/tcp-frames.js';
import {
  BAD_CSUM_RANGE, BAD_GSO_SIZE, BAD_GSO_TYPE, BAD_HDR_LEN, BAD_PACKET, BAD_TOO_MANY_SEGMENTS, CAN_CSUM, CAN_ECN, CAN_TSO4, CAN_TSO6,
  F_NEEDS_CSUM, FrameLayout, GSO_ECN, GSO_NONE, GSO_TCPV4, GSO_TCPV6, GSO_UDP, HEADER_PEEK, needs, OFFLOAD_OK, validate, VnetHeader,
} from '../../../../src/vhost-user/switch/offload.js';

function hdr(fields: Partial<VnetHeader>): VnetHeader {
  const h = new VnetHeader();
  Object.assign(h, fields);
  return h;
}

/** Checks every segment against the original, field by field, with independent checksums. */
function checkSegments(s: Spec, mss: number, gsoType: number): Buffer[] {
  const f = tcpFrame(s);
  const h = hdr({ flags: F_NEEDS_CSUM, gsoType, gsoSize: mss, hdrLen: f.hdrEnd, csumStart: f.l4, csumOffset: 16 });
  const l = new FrameLayout();
  assert.equal(validate(h, f.frame, Math.min(HEADER_PEEK, f.frame.length), f.frame.length, l), OFFLOAD_OK);
  const segs: Buffer[] = [];
  const n = segmentTcp(f.frame, l, h, new Uint8Array(f.frame.length), (b, len) => segs.push(Buffer.from(b.subarray(0, len))));
  const want = Math.max(1, Math.ceil(s.payload / mss));
  assert.equal(n, want);
  assert.equal(segs.length, want);
  const orig = f.frame;
  const seq0 = orig.readUInt32BE(f.l4 + 4);
  const flags0 = orig[f.l4 + 13]!;
  let joined = Buffer.alloc(0);
  segs.forEach((g, i) => {
    const n = Math.min(mss, s.payload - i * mss);
    assert.equal(g.length, f.hdrEnd + Math.max(0, n), `segment ${i} length`);
    assert.deepEqual(g.subarray(0, f.l3), orig.subarray(0, f.l3), 'Ethernet header and VLAN tag unchanged');
    const ipLen = g.length - f.l3;
    if (s.v6) {
      assert.equal(g.readUInt16BE(f.l3 + 4), ipLen - 40, 'IPv6 payload length');
      assert.deepEqual(g.subarray(f.l3 + 6, f.l4), orig.subarray(f.l3 + 6, f.l4), 'IPv6 rest of header and options');
    } else {
      assert.equal(g.readUInt16BE(f.l3 + 2), ipLen, 'IPv4 total length');
      assert.equal(g.readUInt16BE(f.l3 + 4), (orig.readUInt16BE(f.l3 + 4) + i) & 0xffff, 'IPv4 id increments');
      assert.equal(sum16(g.subarray(f.l3, f.l4)), 0xffff, 'IPv4 header checksum');
      assert.deepEqual(g.subarray(f.l3 + 6, f.l3 + 10), orig.subarray(f.l3 + 6, f.l3 + 10));
      assert.deepEqual(g.subarray(f.l3 + 12, f.l4), orig.subarray(f.l3 + 12, f.l4), 'addresses and IP options');
    }
    assert.equal(g.readUInt32BE(f.l4 + 4), (seq0 + i * mss) >>> 0, 'sequence number');
    assert.deepEqual(g.subarray(f.l4, f.l4 + 4), orig.subarray(f.l4, f.l4 + 4), 'ports');
    assert.deepEqual(g.subarray(f.l4 + 8, f.l4 + 13), orig.subarray(f.l4 + 8, f.l4 + 13), 'ack and data offset');
    assert.deepEqual(g.subarray(f.l4 + 14, f.l4 + 16), orig.subarray(f.l4 + 14, f.l4 + 16), 'window');
    assert.deepEqual(g.subarray(f.l4 + 18, f.hdrEnd), orig.subarray(f.l4 + 18, f.hdrEnd), 'urgent pointer and TCP options');
    let fl = flags0;
    if (i > 0) fl &= ~0x80;
    if (i < segs.length - 1) fl &= ~0x09;
    assert.equal(g[f.l4 + 13], fl, `TCP flags of segment ${i}`);
    const tcpLen = g.length - f.l4;
    const lenBuf = Buffer.alloc(4);
    lenBuf.writeUInt32BE(tcpLen);
    const pseudo = s.v6
      ? Buffer.concat([g.subarray(f.l3 + 8, f.l3 + 40), lenBuf, Buffer.from([0, 0, 0, 6])])
      : Buffer.concat([g.subarray(f.l3 + 12, f.l3 + 20), Buffer.from([0, 6]), lenBuf.subarray(2)]);
    assert.equal(sum16(pseudo, g.subarray(f.l4)), 0xffff, `TCP checksum of segment ${i}`);
    joined = Buffer.concat([joined, g.subarray(f.hdrEnd)]);
  });
  assert.deepEqual(joined, f.payload, 'payload carried over exactly once, in order');
  return segs;
}

describe('TCP segmentation', () => {
  it('IPv4, 64 KiB less headers, MSS 1448 with timestamps, short last segment', () => {
    checkSegments({ payload: 65535 - 14 - 20 - 32, tcpOpts: 12 }, 1448, GSO_TCPV4);
  });
  it('IPv4 with IP options, VLAN-tagged, ECN: CWR only on the first, FIN and PSH only on the last', () => {
    const segs = checkSegments({ payload: 5000, ipOpts: 8, tcpOpts: 12, vlan: 42, flags: 0x80 | 0x10 | 0x08 | 0x01 }, 1000, GSO_TCPV4 | GSO_ECN);
    assert.equal(segs.length, 5);
    assert.equal(segs[0]![14 + 4 + 28 + 13], 0x90);
    assert.equal(segs[4]![14 + 4 + 28 + 13], 0x19);
  });
  it('IPv6, with and without a hop-by-hop header, payload an exact multiple of the MSS', () => {
    checkSegments({ v6: true, payload: 1440 * 4, tcpOpts: 12 }, 1440, GSO_TCPV6);
    checkSegments({ v6: true, hopByHop: true, payload: 3001, vlan: 7 }, 1000, GSO_TCPV6 | GSO_ECN);
  });
  it('a GSO frame with no payload or one short segment comes out as one frame', () => {
    checkSegments({ payload: 0, flags: 0x11 }, 1448, GSO_TCPV4);
    checkSegments({ payload: 100 }, 1448, GSO_TCPV4);
  });
});

describe('a frame captured from Linux', () => {
  // virtio-net header (12 bytes) + a 7306-byte TSO4 frame the kernel handed
  // a tap with IFF_VNET_HDR and TUNSETOFFLOAD (test/lib/tap-relay-main.ts
  // prints such FIXTURE lines): NEEDS_CSUM, TCPV4, hdr_len 66, gso_size 1448.
  const raw = Buffer.from(readFileSync(join(ROOT, 'test/unit/fixtures/linux-tap-tso4.hex'), 'utf8').trim(), 'hex');
  const h = new VnetHeader();
  h.read(raw, 0);
  const frame = raw.subarray(12);
  it('passes our checks and is cut into segments the checksums of which verify', () => {
    assert.deepEqual([h.flags, h.gsoType, h.hdrLen, h.gsoSize, h.csumStart, h.csumOffset], [F_NEEDS_CSUM, GSO_TCPV4, 66, 1448, 34, 16]);
    const l = new FrameLayout();
    assert.equal(validate(h, frame, HEADER_PEEK, frame.length, l), OFFLOAD_OK);
    const segs: Buffer[] = [];
    segmentTcp(frame, l, h, new Uint8Array(frame.length), (b, len) => segs.push(Buffer.from(b.subarray(0, len))));
    const hdrEnd = l.l4 + l.l4Len;
    assert.equal(segs.length, Math.ceil((frame.length - hdrEnd) / 1448));
    for (const g of segs) {
      assert.equal(sum16(g.subarray(14, 34)), 0xffff, 'IPv4 header checksum');
      assert.ok(tcpChecksumOk(g, 14, 34, false), 'TCP checksum');
    }
    assert.deepEqual(Buffer.concat(segs.map((g) => g.subarray(hdrEnd))), frame.subarray(hdrEnd));
  });
  it('its partial checksum, completed as it is, verifies: the kernel left the pseudo-header sum there', () => {
    const f = Buffer.from(frame);
    completeChecksum(f, f.length, h);
    assert.ok(tcpChecksumOk(f, 14, 34, false));
  });
});

describe('checksum completion', () => {
  it('UDP over IPv4 with a partial checksum: the field is completed (0 sent as 0xffff)', () => {
    for (const size of [1, 17, 1472]) {
      const udp = Buffer.alloc(8 + size);
      udp.writeUInt16BE(5353, 0); udp.writeUInt16BE(53, 2); udp.writeUInt16BE(udp.length, 4);
      for (let i = 8; i < udp.length; i++) udp[i] = (i * 13) & 0xff;
      const ip = Buffer.alloc(20);
      ip[0] = 0x45; ip.writeUInt16BE(20 + udp.length, 2); ip[8] = 64; ip[9] = 17;
      Buffer.from(SRC4).copy(ip, 12); Buffer.from(DST4).copy(ip, 16);
      const pseudo = Buffer.concat([ip.subarray(12, 20), Buffer.from([0, 17]), udp.subarray(4, 6)]);
      udp.writeUInt16BE(sum16(pseudo), 6); // what Linux leaves there: the folded pseudo-header sum
      const frame = Buffer.concat([Buffer.alloc(12, 2), Buffer.from([8, 0]), ip, udp]);
      const h = hdr({ flags: F_NEEDS_CSUM, csumStart: 34, csumOffset: 6 });
      const l = new FrameLayout();
      assert.equal(validate(h, frame, frame.length, frame.length, l), OFFLOAD_OK);
      completeChecksum(frame, frame.length, h);
      const got = frame.readUInt16BE(40);
      assert.notEqual(got, 0);
      udp.writeUInt16BE(got, 6);
      assert.equal(sum16(pseudo, udp), 0xffff, `UDP checksum, ${size} bytes`);
    }
  });
  it('TCP over IPv6, odd length', () => {
    const f = tcpFrame({ v6: true, payload: 333 });
    const tcpLen = f.frame.length - f.l4;
    const lenBuf = Buffer.alloc(4);
    lenBuf.writeUInt32BE(tcpLen);
    const pseudo = Buffer.concat([f.frame.subarray(f.l3 + 8, f.l3 + 40), lenBuf, Buffer.from([0, 0, 0, 6])]);
    f.frame.writeUInt16BE(sum16(pseudo), f.l4 + 16);
    completeChecksum(f.frame, f.frame.length, hdr({ flags: F_NEEDS_CSUM, csumStart: f.l4, csumOffset: 16 }));
    assert.equal(sum16(pseudo, f.frame.subarray(f.l4)), 0xffff);
  });
});

describe('hostile headers', () => {
  const f = tcpFrame({ payload: 3000 });
  const ok = { flags: F_NEEDS_CSUM, gsoType: GSO_TCPV4, gsoSize: 1448, hdrLen: f.hdrEnd, csumStart: f.l4, csumOffset: 16 };
  const check = (fields: Partial<VnetHeader>, frame = f.frame): number =>
    validate(hdr({ ...ok, ...fields }), frame, Math.min(HEADER_PEEK, frame.length), frame.length, new FrameLayout());
  it('accepts the well-formed header', () => assert.equal(check({}), OFFLOAD_OK));
  it('refuses each lie with its reason', () => {
    assert.equal(check({ gsoSize: 0 }), BAD_GSO_SIZE);
    assert.equal(check({ hdrLen: f.frame.length + 1 }), BAD_HDR_LEN);
    assert.equal(check({ csumStart: f.frame.length - 1 }), BAD_CSUM_RANGE);
    assert.equal(check({ csumOffset: 0xffff }), BAD_CSUM_RANGE);
    assert.equal(check({ gsoType: GSO_NONE, csumStart: 0xffff, csumOffset: 0xffff }), BAD_CSUM_RANGE);
    assert.equal(check({ csumStart: f.l4 - 2 }), BAD_CSUM_RANGE, 'partial checksum not the TCP one');
    assert.equal(check({ gsoType: GSO_TCPV6 }), BAD_PACKET, 'TCPV6 on an IPv4 packet');
    assert.equal(check({ gsoType: GSO_UDP }), BAD_GSO_TYPE, 'UFO is not offered');
    assert.equal(check({ gsoType: 2 }), BAD_GSO_TYPE);
    assert.equal(check({ gsoType: GSO_NONE | GSO_ECN }), BAD_GSO_TYPE);
    assert.equal(check({ gsoSize: 11 }), BAD_TOO_MANY_SEGMENTS);
    assert.equal(check({}, f.frame.subarray(0, 30)), BAD_CSUM_RANGE, 'truncated frame');
    assert.equal(check({ flags: 0, hdrLen: 0 }, f.frame.subarray(0, 40)), BAD_PACKET, 'truncated IP header');
  });
  it('refuses non-TCP under TCPV4, fragments, lengths beyond the frame, bad header lengths', () => {
    const mod = (at: number, v: number): Buffer => { const c = Buffer.from(f.frame); c[at] = v; return c; };
    assert.equal(check({ flags: 0 }, mod(f.l3 + 9, 17)), BAD_PACKET, 'UDP under TCPV4');
    assert.equal(check({}, mod(f.l3 + 6, 0x60)), BAD_PACKET, 'IPv4 fragment (MF)');
    assert.equal(check({}, mod(f.l3 + 2, 0xff)), BAD_PACKET, 'IPv4 total length beyond the frame');
    assert.equal(check({}, mod(f.l3, 0x44)), BAD_PACKET, 'IHL 4');
    assert.equal(check({}, mod(f.l4 + 12, 0x40)), BAD_PACKET, 'TCP data offset 4');
    assert.equal(check({}, mod(12, 0x86)), BAD_PACKET, 'not IPv4 at all');
  });
  it('needs() names what the sender must have negotiated', () => {
    assert.equal(needs(hdr({ flags: F_NEEDS_CSUM })), CAN_CSUM);
    assert.equal(needs(hdr({ flags: F_NEEDS_CSUM, gsoType: GSO_TCPV6 | GSO_ECN })), CAN_CSUM | CAN_TSO6 | CAN_ECN);
    assert.equal(needs(hdr({ gsoType: GSO_TCPV4 })), CAN_TSO4);
  });
});
