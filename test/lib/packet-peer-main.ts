// Run inside a test namespace by packet-peer.ts: a packet socket on one
// interface. Every frame it receives is printed as a hex line on stdout;
// every hex line on stdin is sent as a frame.
import { createInterface } from 'node:readline';
import { c } from '../../src/sys/libc.js';
import { openPacketSocket } from '../../src/sys/packet.js';
import { watchReadable } from '../../src/sys/poller.js';

const fd = openPacketSocket(process.argv[2]!, true);
const buf = Buffer.alloc(65536);
watchReadable(fd, () => {
  for (;;) {
    const n = Number(c.read(fd, buf, buf.length));
    if (n <= 0) break;
    process.stdout.write(`${buf.subarray(0, n).toString('hex')}\n`);
  }
});
createInterface({ input: process.stdin }).on('line', (l) => {
  const f = Buffer.from(l.trim(), 'hex');
  if (f.length) c.write(fd, f, f.length);
}).on('close', () => process.exit(0));
process.stdout.write('READY\n');
