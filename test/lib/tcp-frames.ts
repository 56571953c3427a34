// TCP/IP frames as a Linux sender hands them over for segmentation offload,
// and an independent checksum to check what the switch makes of them.

// Independent ones'-complement checksum (RFC 1071), over a list of buffers.
export function sum16(...parts: Buffer[]): number {
  const b = Buffer.concat(parts);
  let s = 0;
  for (let i = 0; i + 1 < b.length; i += 2) s += b.readUInt16BE(i);
  if (b.length & 1) s += b[b.length - 1]! << 8;
  while (s > 0xffff) s = (s & 0xffff) + (s >>> 16);
  return s;
}

export interface Spec {
  v6?: boolean; vlan?: number; ipOpts?: number; tcpOpts?: number; payload: number;
  flags?: number; seq?: number; id?: number; hopByHop?: boolean; dstMac?: number[]; srcMac?: number[];
}

export const SRC4 = [10, 0, 0, 1], DST4 = [10, 0, 0, 2];
const SRC6 = Buffer.from('fd000000000000000000000000000001', 'hex');
const DST6 = Buffer.from('fd000000000000000000000000000002', 'hex');

/** A TCP frame as a Linux sender hands it over for TSO: the lengths of the whole, the TCP checksum field left 0. */
export function tcpFrame(s: Spec): { frame: Buffer; l3: number; l4: number; hdrEnd: number; payload: Buffer } {
  const eth = Buffer.from([...(s.dstMac ?? [2, 0, 0, 0, 0, 2]), ...(s.srcMac ?? [2, 0, 0, 0, 0, 1])]);
  const tag = s.vlan !== undefined ? Buffer.from([0x81, 0, s.vlan >> 8, s.vlan & 0xff]) : Buffer.alloc(0);
  const type = Buffer.from(s.v6 ? [0x86, 0xdd] : [0x08, 0x00]);
  const payload = Buffer.alloc(s.payload);
  for (let i = 0; i < payload.length; i++) payload[i] = (i * 7 + 3) & 0xff;
  const thl = 20 + (s.tcpOpts ?? 0);
  const tcp = Buffer.alloc(thl);
  tcp.writeUInt16BE(40000, 0);
  tcp.writeUInt16BE(5001, 2);
  tcp.writeUInt32BE(s.seq ?? 0xfffff000, 4); // wraps across 2^32 in the segments
  tcp.writeUInt32BE(0x01020304, 8);
  tcp[12] = (thl / 4) << 4;
  tcp[13] = s.flags ?? 0x10;
  tcp.writeUInt16BE(502, 14);
  for (let i = 20; i < thl; i++) tcp[i] = i === 20 ? 1 : 0x11 + i; // NOP then bytes
  let ip: Buffer;
  let ext = Buffer.alloc(0);
  if (s.v6) {
    if (s.hopByHop) { ext = Buffer.alloc(8); ext[0] = 6; ext[1] = 0; ext[2] = 1; ext[3] = 4; }
    ip = Buffer.alloc(40);
    ip[0] = 0x60;
    ip.writeUInt16BE(ext.length + thl + payload.length, 4);
    ip[6] = s.hopByHop ? 0 : 6;
    ip[7] = 64;
    SRC6.copy(ip, 8); DST6.copy(ip, 24);
  } else {
    const ihl = 20 + (s.ipOpts ?? 0);
    ip = Buffer.alloc(ihl);
    ip[0] = 0x40 | (ihl / 4);
    ip[1] = 0x02; // ECT(0)
    ip.writeUInt16BE(ihl + thl + payload.length, 2);
    ip.writeUInt16BE(s.id ?? 0xfffe, 4); // wraps too
    ip.writeUInt16BE(0x4000, 6); // DF
    ip[8] = 64; ip[9] = 6;
    Buffer.from(SRC4).copy(ip, 12); Buffer.from(DST4).copy(ip, 16);
    for (let i = 20; i < ihl; i++) ip[i] = 1; // NOP options
  }
  const frame = Buffer.concat([eth, tag, type, ip, ext, tcp, payload]);
  const l3 = 14 + tag.length;
  const l4 = l3 + ip.length + ext.length;
  return { frame, l3, l4, hdrEnd: l4 + thl, payload };
}


/** The TCP checksum of a frame verifies (independent pseudo-header sum). */
export function tcpChecksumOk(g: Buffer, l3: number, l4: number, v6: boolean): boolean {
  const lenBuf = Buffer.alloc(4);
  lenBuf.writeUInt32BE(g.length - l4);
  const pseudo = v6
    ? Buffer.concat([g.subarray(l3 + 8, l3 + 40), lenBuf, Buffer.from([0, 0, 0, 6])])
    : Buffer.concat([g.subarray(l3 + 12, l3 + 20), Buffer.from([0, 6]), lenBuf.subarray(2)]);
  return sum16(pseudo, g.subarray(l4)) === 0xffff;
}
