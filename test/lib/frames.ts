// Ethernet frames a test guest sends and checks: ARP request/reply and ICMP
// echo over IPv4, built and parsed by hand (test code: a few lines each).
const ipBytes = (ip: string): number[] => ip.split('.').map(Number);
const macBytes = (mac: string): number[] => mac.split(':').map((h) => parseInt(h, 16));

function checksum(b: Buffer): number {
  let s = 0;
  for (let i = 0; i + 1 < b.length; i += 2) s += b.readUInt16BE(i);
  if (b.length & 1) s += b[b.length - 1]! << 8;
  while (s >> 16) s = (s & 0xffff) + (s >> 16);
  return ~s & 0xffff;
}

export function arpRequest(srcMac: string, srcIp: string, targetIp: string): Buffer {
  const f = Buffer.alloc(60);
  Buffer.from([0xff, 0xff, 0xff, 0xff, 0xff, 0xff, ...macBytes(srcMac), 0x08, 0x06]).copy(f, 0);
  Buffer.from([0, 1, 0x08, 0, 6, 4, 0, 1, ...macBytes(srcMac), ...ipBytes(srcIp), 0, 0, 0, 0, 0, 0, ...ipBytes(targetIp)]).copy(f, 14);
  return f;
}

/** The sender MAC of an ARP reply from `ip`, or null. */
export function arpReplyFrom(f: Uint8Array, ip: string): string | null {
  const b = Buffer.from(f);
  if (b.length < 42 || b.readUInt16BE(12) !== 0x0806 || b.readUInt16BE(20) !== 2) return null;
  if (b.subarray(28, 32).join('.') !== ip) return null;
  return [...b.subarray(22, 28)].map((x) => x.toString(16).padStart(2, '0')).join(':');
}

export function icmpEcho(srcMac: string, dstMac: string, srcIp: string, dstIp: string, id: number, seq: number, payload = 56): Buffer {
  const f = Buffer.alloc(14 + 20 + 8 + payload);
  Buffer.from([...macBytes(dstMac), ...macBytes(srcMac), 0x08, 0x00]).copy(f, 0);
  const ip = f.subarray(14, 34);
  ip[0] = 0x45;
  ip.writeUInt16BE(20 + 8 + payload, 2);
  ip.writeUInt16BE(id, 4);
  ip[8] = 64;
  ip[9] = 1;
  Buffer.from([...ipBytes(srcIp), ...ipBytes(dstIp)]).copy(ip, 12);
  ip.writeUInt16BE(checksum(ip), 10);
  const icmp = f.subarray(34);
  icmp[0] = 8;
  icmp.writeUInt16BE(id, 4);
  icmp.writeUInt16BE(seq, 6);
  for (let i = 0; i < payload; i++) icmp[8 + i] = (i + seq) & 0xff;
  icmp.writeUInt16BE(checksum(icmp), 2);
  return f;
}

export function isEchoReply(f: Uint8Array, fromIp: string, id: number, seq: number): boolean {
  const b = Buffer.from(f);
  if (b.length < 42 || b.readUInt16BE(12) !== 0x0800 || b[23] !== 1) return false;
  return b.subarray(26, 30).join('.') === fromIp && b[34] === 0 && b.readUInt16BE(38) === id && b.readUInt16BE(40) === seq;
}

/** A 60-byte Ethernet frame (local ethertype 0x88b5) carrying `tag` and `seq`. */
export function testFrame(tag: number, seq: number, len = 60): Uint8Array {
  const f = new Uint8Array(len);
  f.set([0x02, 0, 0, 0, 0, 0xb0 + (tag & 0xf)], 0);
  f.set([0x02, 0, 0, 0, 0, 0xa0 + (tag & 0xf)], 6);
  f[12] = 0x88; f[13] = 0xb5;
  const v = new DataView(f.buffer);
  v.setUint32(14, tag >>> 0, true);
  v.setUint32(18, seq >>> 0, true);
  for (let i = 22; i < len; i++) f[i] = (seq + i) & 0xff;
  return f;
}

export function frameSeq(f: Uint8Array): { tag: number; seq: number } {
  const v = new DataView(f.buffer, f.byteOffset, f.byteLength);
  return { tag: v.getUint32(14, true), seq: v.getUint32(18, true) };
}
