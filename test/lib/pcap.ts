// Classic libpcap capture files (microsecond timestamps, Ethernet), for
// feeding recorded frames to DPDK's net_pcap PMD.

/** A pcap file holding `frames` in order, one per microsecond. */
export function pcapFile(frames: Buffer[]): Buffer {
  const head = Buffer.alloc(24);
  head.writeUInt32LE(0xa1b2c3d4, 0); // magic: microsecond timestamps, our byte order
  head.writeUInt16LE(2, 4);
  head.writeUInt16LE(4, 6);
  head.writeUInt32LE(262144, 16); // snaplen: above any GSO frame
  head.writeUInt32LE(1, 20); // LINKTYPE_ETHERNET
  const parts: Buffer[] = [head];
  frames.forEach((f, i) => {
    const rec = Buffer.alloc(16);
    rec.writeUInt32LE(i, 4);
    rec.writeUInt32LE(f.length, 8);
    rec.writeUInt32LE(f.length, 12);
    parts.push(rec, f);
  });
  return Buffer.concat(parts);
}
