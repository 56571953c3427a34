// The switch's uplink carrying frames byte-exact both ways, through a veth in a
// throwaway namespace: `--uplink` (AF_PACKET RX ring, AF_XDP out by default)
// in event and busy mode, `--uplink-tx packet` (the TX ring out), and `--br`
// (a tap of ours on a bridge). 64- and 1514-byte frames guest ->
// uplink and uplink -> guest arrive unchanged and in order; with the switch
// stopped (SIGSTOP) while the far end keeps sending, the uplink's ring fills
// and the kernel drops the excess; once the switch runs again the guest gets
// the first frames in order, and every frame the switch took from the uplink
// is either delivered or counted as dropped (nothing lost inside the switch).
import assert from 'node:assert/strict';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, before, describe, it } from 'node:test';
import { ControlClient } from '../lib/control-client.js';
import { withNetNs } from '../lib/netns.js';
import { PacketPeer } from '../lib/packet-peer.js';
import { Serve } from '../lib/serve.js';
import { ETHERTYPE, macBytes, tagOf } from '../lib/switch-guests.js';
import { VhostFrontend } from '../lib/vhost-frontend.js';
import { hasFastPath } from '../../src/vhost-user/virtq/native.js';

const GUEST = '52:54:00:00:00:0a';
const HOST = '02:00:00:00:00:99';

/** A frame dst <- src of `len` bytes: our ethertype, `tag` at 14, then a pattern seeded by the tag. */
function frame(dst: string, src: string, tag: string, len: number): Uint8Array {
  const f = new Uint8Array(len);
  f.set(macBytes(dst), 0);
  f.set(macBytes(src), 6);
  f[12] = ETHERTYPE >> 8;
  f[13] = ETHERTYPE & 0xff;
  const t = Buffer.from(tag);
  f.set(t, 14);
  let seed = 0;
  for (const b of t) seed = (seed * 31 + b) & 0xff;
  for (let i = 54; i < len; i++) f[i] = (i * 13 + seed) & 0xff;
  return f;
}

/** The same with an 802.1Q/802.1ad tag after the MACs (`len` bytes in all). */
function tagged(dst: string, src: string, tpid: number, tci: number, tag: string, len: number): Uint8Array {
  const inner = frame(dst, src, tag, len - 4);
  const f = new Uint8Array(len);
  f.set(inner.subarray(0, 12), 0);
  f.set([tpid >> 8, tpid & 0xff, tci >> 8, tci & 0xff], 12);
  f.set(inner.subarray(12), 16);
  return f;
}

const hex = (f: Uint8Array): string => Buffer.from(f).toString('hex');
const SIZES = [64, 1514];

interface UplinkStats { rxFrames: number; txFrames: number; rxDropped: number; txDropped: number; txNative: number }
interface ListReply { ports: { port: number; stats: UplinkStats }[]; uplink: { kind: string; stats: UplinkStats } }

describe('vhost-user switch uplink: frames byte-exact both ways through a veth', () => {
  let dir: string;
  before(() => { dir = mkdtempSync(join(tmpdir(), 'qnh-up-')); });
  after(() => rmSync(dir, { recursive: true, force: true }));

  const variants = [
    { name: '--uplink (AF_PACKET RX ring, AF_XDP out), event mode', kind: 'packet', args: ['--uplink', 'up0'], log: /sending through AF_XDP \(copy mode\)/ },
    { name: '--uplink (AF_PACKET RX ring, AF_XDP out), busy mode', kind: 'packet', args: ['--uplink', 'up0', '--poll', 'busy'], log: /sending through AF_XDP \(copy mode\)/ },
    { name: '--uplink --uplink-tx packet (AF_PACKET rings both ways), busy mode', kind: 'packet', args: ['--uplink', 'up0', '--uplink-tx', 'packet', '--poll', 'busy'], log: /sending through TX ring \(--uplink-tx packet\)/ },
    { name: '--br (a tap on a bridge), event mode', kind: 'tap', args: ['--br', 'br0'], log: /uplink: tap \S+ on bridge br0/ },
  ] as const;

  for (const v of variants) {
    it(`${v.name}: 64 and 1514 B in order both ways; a full ring drops at the kernel, the switch loses nothing it took`, { timeout: 180_000 }, async () => {
      await withNetNs(async (ns) => {
        ns.addVeth('up0', 'far0');
        if (v.kind === 'tap') {
          ns.addBridge('br0');
          ns.ip('link', 'set', 'up0', 'master', 'br0');
        }
        const sock = join(dir, `${v.kind}-${v.args.length}.sock`);
        const ctl = join(dir, `${v.kind}-${v.args.length}.ctl`);
        const s = new Serve(['--socket', sock, ...v.args, '--control', ctl], ns);
        const peer = new PacketPeer(ns, 'far0');
        let fe: VhostFrontend | null = null;
        let cl: ControlClient | null = null;
        try {
          await Promise.all([s.ready([sock, ctl]), peer.started()]);
          fe = await VhostFrontend.connectReady(sock, 10000);
          await fe.handshake({ memory: { name: `qnh-up-${v.kind}` } });
          cl = await ControlClient.connect(ctl);
          const list = async (): Promise<ListReply> => (await cl!.request({ op: 'list' })) as unknown as ListReply;
          assert.equal((await list()).uplink.kind, v.kind);
          assert.match(s.log(), v.log);

          // guest -> uplink
          const out = SIZES.flatMap((len) => Array.from({ length: 20 }, (_, i) => frame(HOST, GUEST, `o-${len}-${i}`, len)));
          await fe.transmit(out, 20000);
          const mine = (f: Buffer): boolean => tagOf(f)?.startsWith('o-') ?? false;
          await peer.waitFor((f) => tagOf(f) === `o-1514-19`, 20000);
          assert.deepEqual(peer.matching(mine).map(hex), out.map(hex), 'the far end got every frame, unchanged, in order');
          if (hasFastPath) {
            const st = (await list()).ports.find((p) => p.port === 0)!.stats;
            assert.ok(st.txNative > 0, `the stream went through the native fast path (${JSON.stringify(st)})`);
          }
          // VLAN-tagged frames keep their tag, up to the MTU plus the tag.
          const outTagged = [tagged(HOST, GUEST, 0x8100, 0x0064, 'ot-1', 64), tagged(HOST, GUEST, 0x8100, 0x2fff, 'ot-2', 1518), tagged(HOST, GUEST, 0x88a8, 7, 'ot-3', 64)];
          await fe.transmit(outTagged, 20000);
          const tagHex = new Set(outTagged.map(hex));
          await VhostFrontend.until(() => peer.matching((f) => tagHex.has(hex(f))).length === outTagged.length, 20000, () => 'tagged frames at the far end');
          assert.deepEqual(peer.matching((f) => tagHex.has(hex(f))).map(hex), outTagged.map(hex));

          // uplink -> guest
          const rx = fe.rings[0]!;
          const got: string[] = [];
          const vlanGot: string[] = [];
          const collect = (): void => {
            for (const f of rx.takeRx()) {
              if (f && tagOf(f)?.startsWith('i-')) got.push(hex(f));
              else if (f && f.length > 16 && (f[12] === 0x81 || f[12] === 0x88)) vlanGot.push(hex(f));
            }
            if (rx.freeCount) rx.postRx();
          };
          const inn = SIZES.flatMap((len) => Array.from({ length: 20 }, (_, i) => frame(GUEST, HOST, `i-${len}-${i}`, len)));
          for (const f of inn) peer.send(f);
          await VhostFrontend.until(() => { collect(); return got.length >= inn.length; }, 20000, () => `${inn.length} frames from the uplink (got ${got.length})`);
          assert.deepEqual(got, inn.map(hex), 'the guest got every frame, unchanged, in order');
          // The kernel takes a VLAN tag off into the skb before a packet socket
          // or a tap sees the frame: the guest must get it back in the frame.
          const inTagged = [tagged(GUEST, HOST, 0x8100, 0x0064, 'it-1', 64), tagged(GUEST, HOST, 0x8100, 0xe00a, 'it-2', 1518), tagged(GUEST, HOST, 0x88a8, 7, 'it-3', 64)];
          for (const f of inTagged) peer.send(f);
          await VhostFrontend.until(() => { collect(); return vlanGot.length >= inTagged.length; }, 20000, () => `tagged frames from the uplink (got ${vlanGot.length})`);
          assert.deepEqual(vlanGot, inTagged.map(hex), 'tagged frames arrive with their tag');

          // A full ring: the switch stopped, the far end sends more than the
          // uplink can queue (4096 ring slots; a tap queues ~1000).
          const before = await list();
          const port0 = (r: ListReply): UplinkStats => r.ports.find((p) => p.port === 0)!.stats;
          const burst = Array.from({ length: 5000 }, (_, i) => frame(GUEST, HOST, `f-${i}`, i % 2 ? 1514 : 64));
          const room = rx.outstanding.size;
          assert.ok(room > 0 && room < burst.length);
          got.length = 0;
          s.proc.kill('SIGSTOP');
          try {
            for (const f of burst) peer.send(f);
            // The peer child writes what it reads from its stdin: wait until it
            // wrote the last one (the kernel queues each frame into the uplink's
            // ring or drops it as it is written), and a moment for any deferred softirq.
            await peer.sync();
            await new Promise((r) => setTimeout(r, 500));
          } finally {
            s.proc.kill('SIGCONT');
          }
          // The switch drains what its uplink queued: counters settle.
          let last = -1;
          let now = before;
          for (let i = 0; i < 100; i++) {
            await new Promise((r) => setTimeout(r, 200));
            now = await list();
            if (now.uplink.stats.rxFrames === last) break;
            last = now.uplink.stats.rxFrames;
          }
          const took = now.uplink.stats.rxFrames - before.uplink.stats.rxFrames;
          const delivered = port0(now).rxFrames - port0(before).rxFrames;
          const dropped = port0(now).rxDropped - port0(before).rxDropped;
          const taken = rx.takeRx().filter((f) => f && tagOf(f)?.startsWith('f-'));
          assert.ok(took > room && took < burst.length, `the uplink queued more than the guest had room for, not all (${took} of ${burst.length}, room ${room})`);
          assert.equal(delivered + dropped, took, 'every frame the switch took was delivered or counted as dropped');
          assert.equal(delivered, room, 'the guest got a frame in every buffer it had');
          // A few buffers may have gone to the kernel's own IPv6 chatter on the veth.
          assert.ok(taken.length <= room && taken.length >= room - 10, `${taken.length} of the burst's frames delivered, room ${room}`);
          assert.deepEqual(taken.map((f) => hex(f!)), burst.slice(0, taken.length).map(hex), 'the first frames, unchanged, in order');
          assert.equal(now.uplink.stats.rxDropped, before.uplink.stats.rxDropped, 'no bad ring slot');
          rx.postRx();
        } finally {
          cl?.close();
          fe?.close();
          peer.stop();
          await s.stop();
        }
      });
    });
  }
});
