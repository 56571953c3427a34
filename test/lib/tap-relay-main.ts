// Run inside a test namespace by the kernel offload test: two taps, `in`
// with IFF_VNET_HDR and every offload (the kernel hands it partial checksums
// and TSO frames of up to 64 KiB, as to a virtio-net device), `out` plain
// (the kernel verifies every checksum of what we write). Frames from `in`
// go through the switch's offload code (switch/offload.ts, switch/gso.ts)
// into `out` as plain frames; frames from `out` go back into `in` behind a
// zero header. Prints READY IN OUT, then on SIGTERM (or stdin closing)
// STATS {json}; the first GSO frame seen is printed as FIXTURE HEX (header
// and frame) for the byte fixtures of the unit tests.
import { c } from '../../src/sys/libc.js';
import { watchReadable } from '../../src/sys/poller.js';
import { createTap, setTapOffload, TUN_F_CSUM, TUN_F_TSO4, TUN_F_TSO6, TUN_F_TSO_ECN } from '../../src/sys/tun.js';
import { setNonBlocking } from '../../src/sys/unix-socket.js';
import { completeChecksum, segmentTcp } from '../../src/vhost-user/switch/gso.js';
import { F_NEEDS_CSUM, FrameLayout, GSO_NONE, HEADER_PEEK, OFFLOAD_OK, validate, VnetHeader } from '../../src/vhost-user/switch/offload.js';

const HDR = 12;
const inTap = createTap({ name: process.argv[2]!, vnetHdr: true });
if (!inTap.vnetHdr) throw new Error('no IFF_VNET_HDR');
setTapOffload(inTap.fd, TUN_F_CSUM | TUN_F_TSO4 | TUN_F_TSO6 | TUN_F_TSO_ECN);
const outTap = createTap({ name: process.argv[3]! });
for (const fd of [inTap.fd, outTap.fd]) setNonBlocking(fd, true);

const stats = { frames: 0, gso: 0, segments: 0, csum: 0, plain: 0, bad: 0, back: 0, maxFrame: 0 };
const buf = Buffer.alloc(HDR + 65536);
const seg = Buffer.alloc(65536);
const h = new VnetHeader();
const layout = new FrameLayout();
let fixture = false;
const put = (b: Uint8Array, len: number): void => { c.write(outTap.fd, b, len); };

watchReadable(inTap.fd, () => {
  for (;;) {
    const n = Number(c.read(inTap.fd, buf, buf.length));
    if (n <= HDR) break;
    stats.frames++;
    const len = n - HDR;
    const frame = buf.subarray(HDR, n);
    if (len > stats.maxFrame) stats.maxFrame = len;
    h.read(buf, 0);
    if (validate(h, frame, Math.min(HEADER_PEEK, len), len, layout) !== OFFLOAD_OK) { stats.bad++; continue; }
    if (h.gsoType !== GSO_NONE) {
      if (!fixture && len > 3000 && len < 12000) { fixture = true; process.stdout.write(`FIXTURE ${buf.subarray(0, n).toString('hex')}\n`); }
      stats.gso++;
      stats.segments += segmentTcp(frame, layout, h, seg, put);
    } else if ((h.flags & F_NEEDS_CSUM) !== 0) {
      stats.csum++;
      completeChecksum(frame, len, h);
      put(frame, len);
    } else {
      stats.plain++;
      put(frame, len);
    }
  }
});
watchReadable(outTap.fd, () => {
  for (;;) {
    const n = Number(c.read(outTap.fd, buf.subarray(HDR), buf.length - HDR));
    if (n <= 0) break;
    buf.fill(0, 0, HDR);
    c.write(inTap.fd, buf, HDR + n);
    stats.back++;
  }
});
const done = (): void => { process.stdout.write(`STATS ${JSON.stringify(stats)}\n`); process.exit(0); };
process.on('SIGTERM', done);
process.stdin.on('end', done).resume();
process.stdout.write(`READY ${inTap.name} ${outTap.name}\n`);
