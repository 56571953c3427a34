// The switch uplink's AF_XDP sender against the real kernel, on a veth in a
// throwaway namespace: frames put on its TX ring arrive byte-exact and in
// order at the far end, every UMEM frame comes back through the completion
// ring, no XDP program is attached to the device (XDP is what would take
// received frames from the host's own stack), a second switch on
// the same device falls back to the packet TX ring (queue 0 taken) and
// `--uplink-tx xdp` refuses instead of falling back.
import assert from 'node:assert/strict';
import { fileURLToPath } from 'node:url';
import { describe, it } from 'node:test';
import { withNetNs } from '../lib/netns.js';
import { PacketPeer } from '../lib/packet-peer.js';
import { frame } from '../lib/native-side.js';

const PROBE = fileURLToPath(new URL('../lib/xsk-probe-main.js', import.meta.url));
const DST = 0x020000000099;
const SRC = 0x52540000000a;

describe('uplink: AF_XDP sender on a veth (real kernel)', () => {
  it('frames arrive byte-exact and in order, all completed; no XDP program; a second user falls back, a forced one refuses', { timeout: 120_000 }, async () => {
    await withNetNs(async (ns) => {
      ns.addVeth('up0', 'far0');
      const peer = new PacketPeer(ns, 'far0');
      try {
        await peer.started();
        const frames = [14, 60, 64, 1000, 1514, 1518, 64].map((len, i) => { const f = frame(len, DST, SRC, i); f[12] = 0x88; f[13] = 0xb5; return f; });
        const run = ns.exec(process.execPath, PROBE, 'up0', ...frames.map((f) => Buffer.from(f).toString('hex')));
        const r = JSON.parse(run) as Record<string, unknown>;
        assert.match(String(r.firstPath), /^AF_XDP \(copy mode\)/);
        assert.match(String(r.secondPath), /^TX ring \(no AF_XDP: bind \(AF_XDP up0 queue 0\): EBUSY\)/);
        assert.match(String(r.forced), /EBUSY/);
        assert.equal(r.queued, frames.length);
        assert.equal(r.unsent, 0);
        assert.equal(r.inFlight, 0, 'every frame completed');
        const ours = (f: Buffer): boolean => f.length >= 14 && f[12] === 0x88 && f[13] === 0xb5;
        await peer.waitFor((f) => ours(f) && f.length === 64 && f[20] === ((20 * 7 + 6) & 0xff), 10000);
        assert.deepEqual(peer.matching(ours).map((f) => f.toString('hex')), frames.map((f) => Buffer.from(f).toString('hex')));
        assert.equal(JSON.stringify(ns.linkDetails('up0')).includes('"xdp"'), false, 'no XDP program on the device');
      } finally {
        peer.stop();
      }
    });
  });
});
