// Run inside a test namespace by test/e2e/uplink-xsk.test.ts: opens the
// switch's uplink on DEV the ways the switch does (vhost-user/uplink.ts), and
// sends the frames given as hex arguments through the AF_XDP socket with the
// data path's own ring code (dataplane/xsk-tx.ts), mapped in this thread as
// the worker maps it. Prints one JSON line of what happened.
import { mapXsk, kickXsk } from '../../src/sys/xsk.js';
import { openUplink } from '../../src/vhost-user/uplink.js';
import { XskTx } from '../../src/vhost-user/dataplane/xsk-tx.js';

const [dev, ...hexFrames] = process.argv.slice(2);
const first = openUplink({ dev: dev!, tx: 'auto' })!;
const out: Record<string, unknown> = { firstPath: first.txPath };
try {
  // A second switch on the same device: queue 0 already has our AF_XDP socket.
  const second = openUplink({ dev: dev!, tx: 'auto' })!;
  out.secondPath = second.txPath;
  second.close();
  try {
    openUplink({ dev: dev!, tx: 'xdp' })!.close();
    out.forced = 'opened';
  } catch (e) {
    out.forced = (e as Error).message;
  }
  const info = first.xsk!;
  const maps = mapXsk(info);
  try {
    const x = new XskTx(info, maps.umem, maps.tx, maps.cq, () => kickXsk(info.fd), 1518);
    let queued = 0;
    for (const h of hexFrames) if (x.put(Buffer.from(h, 'hex'), 0, h.length / 2)) queued++;
    x.flush();
    // Completions come when the skbs are freed: wait a little for all of them.
    for (let i = 0; i < 100 && x.inFlight() !== 0; i++) { x.flush(); await new Promise((r) => setTimeout(r, 10)); }
    Object.assign(out, { queued, unsent: x.unsent(), inFlight: x.inFlight() });
  } finally {
    maps.close();
  }
} finally {
  first.close();
}
process.stdout.write(`${JSON.stringify(out)}\n`);
