// Run inside a test namespace by packet-peer.ts: a packet socket on one
// interface. Every frame it receives is printed as a hex line on stdout;
// every hex line on stdin is sent as a frame, and a SYNC line is answered
// SYNCED once every frame before it was written. A VLAN tag the kernel took off
// a received frame (it does so before any packet socket sees it) is put back
// from PACKET_AUXDATA, as libpcap does, so the frame is printed as it was on
// the wire.
import { createInterface } from 'node:readline';
import koffi from 'koffi';
import { addressOf, c, check } from '../../src/sys/libc.js';
import { openPacketSocket } from '../../src/sys/packet.js';
import { watchReadable } from '../../src/sys/poller.js';

const SOL_PACKET = 263;
const PACKET_AUXDATA = 8;
const TP_STATUS_VLAN_VALID = 0x10;
const TP_STATUS_VLAN_TPID_VALID = 0x40;
const setsockopt = koffi.load('libc.so.6').func('int setsockopt(int fd, int level, int name, const void *val, uint32_t len)');

const fd = openPacketSocket(process.argv[2]!, true);
const one = Buffer.alloc(4);
one.writeInt32LE(1);
check(setsockopt(fd, SOL_PACKET, PACKET_AUXDATA, one, 4), 'setsockopt', 'PACKET_AUXDATA');
// A burst of segments cut from a few GSO frames (hundreds of full-size
// frames at once) overflows the default receive buffer before this process
// gets to read; we run as root in the test's namespace, so force 8 MiB.
const SOL_SOCKET = 1;
const SO_RCVBUFFORCE = 33;
const rcvbuf = Buffer.alloc(4);
rcvbuf.writeInt32LE(8 << 20);
check(setsockopt(fd, SOL_SOCKET, SO_RCVBUFFORCE, rcvbuf, 4), 'setsockopt', 'SO_RCVBUFFORCE');

// msghdr -> iovec -> buf, and the control buffer: module-level, never moved.
const buf = Buffer.alloc(65536);
const control = Buffer.alloc(128);
const iov = Buffer.alloc(16);
iov.writeBigUInt64LE(addressOf(buf), 0);
iov.writeBigUInt64LE(BigInt(buf.length), 8);
const msg = Buffer.alloc(56);

function receive(): Buffer | null {
  msg.fill(0);
  msg.writeBigUInt64LE(addressOf(iov), 16);
  msg.writeBigUInt64LE(1n, 24);
  msg.writeBigUInt64LE(addressOf(control), 32);
  msg.writeBigUInt64LE(BigInt(control.length), 40);
  const n = Number(c.recvmsg(fd, msg, 0));
  if (n <= 0) return null;
  const frame = Buffer.from(buf.subarray(0, n));
  const clen = Number(msg.readBigUInt64LE(40));
  for (let p = 0; p + 16 <= clen;) {
    const len = Number(control.readBigUInt64LE(p));
    if (len < 16) break;
    if (control.readInt32LE(p + 8) === SOL_PACKET && control.readInt32LE(p + 12) === PACKET_AUXDATA && len >= 16 + 20) {
      const status = control.readUInt32LE(p + 16);
      if (status & TP_STATUS_VLAN_VALID && n >= 12) {
        const tpid = status & TP_STATUS_VLAN_TPID_VALID ? control.readUInt16LE(p + 16 + 18) : 0x8100;
        const tag = Buffer.alloc(4);
        tag.writeUInt16BE(tpid || 0x8100, 0);
        tag.writeUInt16BE(control.readUInt16LE(p + 16 + 16), 2);
        return Buffer.concat([frame.subarray(0, 12), tag, frame.subarray(12)]);
      }
    }
    p += (len + 7) & ~7;
  }
  return frame;
}

watchReadable(fd, () => {
  for (let f = receive(); f; f = receive()) process.stdout.write(`${f.toString('hex')}\n`);
});
createInterface({ input: process.stdin }).on('line', (l) => {
  // Lines are handled in order and write() is synchronous: every frame before it is sent.
  if (l === 'SYNC') { process.stdout.write('SYNCED\n'); return; }
  const f = Buffer.from(l.trim(), 'hex');
  if (f.length) c.write(fd, f, f.length);
}).on('close', () => process.exit(0));
process.stdout.write('READY\n');
