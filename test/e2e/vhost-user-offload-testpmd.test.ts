// DPDK testpmd (22.11) virtio-user ports negotiating checksum/TSO offloads with
// the switch: a sender whose `csum` engine asks its virtio PMD for TCP
// checksum offload (and TSO), a receiver that takes them (Rx TCP checksum +
// LRO: GUEST_CSUM, GUEST_TSO4/6), one that takes none, and a packet socket
// behind the uplink. The sender's frames come from a pcap (net_pcap PMD):
// DPDK's generators (txonly, flowgen) make UDP only, and the csum engine
// offloads what it forwards. The switch floods them (nobody learned the
// destination), so one run shows the paths: GSO frames passed as they are
// to the offload receiver and, with their virtio-net header, to the uplink's
// kernel (up0 has its tx offloads off, so the kernel segments and checksums
// them, which the far end's packet socket then sees as plain frames), and
// segmented in software toward the receiver without offloads. Counted on the switch (per-port counters, the feature bits it says
// each front-end acked) and on every receiver (frames and bytes), and the
// uplink's segments are checked byte by byte (IP and TCP checksums, the
// payload reassembled by sequence number).
import assert from 'node:assert/strict';
import { mkdtempSync, readdirSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, before, describe, it } from 'node:test';
import { Feature } from '../../src/vhost-user/protocol/index.js';
import { ControlClient } from '../lib/control-client.js';
import { withNetNs } from '../lib/netns.js';
import { until } from '../lib/wait.js';
import { PacketPeer } from '../lib/packet-peer.js';
import { pcapFile } from '../lib/pcap.js';
import { Serve } from '../lib/serve.js';
import { sum16, tcpChecksumOk, tcpFrame } from '../lib/tcp-frames.js';
import { handshakeFailed, haveTestpmd, lastNicStats, Testpmd, type TestpmdResult } from '../lib/testpmd.js';

/** DPDK's pcap PMD (Debian: librte-net-pcapNN, pulled in by dpdk-dev), which the sender reads its frames with. */
function havePcapPmd(): boolean {
  const lib = `/usr/lib/${process.arch === 'arm64' ? 'aarch64' : 'x86_64'}-linux-gnu/dpdk`;
  try {
    return readdirSync(lib).some((d) => readdirSync(join(lib, d)).some((f) => f.startsWith('librte_net_pcap.so')));
  } catch {
    return false;
  }
}
const skip = !haveTestpmd() ? 'dpdk-testpmd is not installed (Debian package dpdk-dev)'
  : !havePcapPmd() ? "DPDK's net_pcap PMD is not installed (Debian package librte-net-pcap*, a dependency of dpdk-dev)" : false;
const TRUST = '--allow-unsealed-memory'; // DPDK's --no-huge memory cannot be sealed (see vhost-user-dpdk.test.ts)
const MSS = 1400; // segments of IPv4 and IPv6 frames both fit a 1500-byte MTU
const PER_FAMILY = 8;

interface Sent { v6: boolean; size: number; seq: number; frame: Buffer; l3: number; l4: number; hdrEnd: number }

/** PER_FAMILY IPv4 then PER_FAMILY IPv6 TCP frames of `payload` bytes each, back to back in sequence space per family. */
function framesOf(payload: number): Sent[] {
  const out: Sent[] = [];
  for (const v6 of [false, true]) {
    for (let i = 0; i < PER_FAMILY; i++) {
      const seq = 1000 + i * payload;
      out.push({ v6, size: payload, seq, ...tcpFrame({ v6, payload, seq, id: i * 64, dstMac: [2, 0, 0, 0, 0, 0x99] }) });
    }
  }
  return out;
}

/** Frames and bytes a receiver without offloads gets for `f` cut at MSS (or whole, for checksum-only runs). */
function segmentsOf(f: Sent, tso: boolean): { frames: number; bytes: number } {
  if (!tso || f.size <= MSS) return { frames: 1, bytes: f.frame.length };
  const n = Math.ceil(f.size / MSS);
  return { frames: n, bytes: n * f.hdrEnd + f.size };
}

type Stats = Record<string, number>;
interface PortList { features: string; stats: Stats }

async function listPorts(ctl: string): Promise<PortList[]> {
  const cl = await ControlClient.connect(ctl);
  try {
    return (await cl.request({ op: 'list' })).ports as PortList[];
  } finally {
    cl.close();
  }
}

const bit = (features: string, b: number): boolean => ((BigInt(features) >> BigInt(b)) & 1n) === 1n;

/** The uplink's copies of the test's frames: IPv4/IPv6 TCP to port 5001. */
function tcpOf(frames: Buffer[]): { g: Buffer; v6: boolean; l3: number; l4: number }[] {
  return frames.flatMap((g) => {
    const type = g.readUInt16BE(12);
    const v6 = type === 0x86dd;
    if (type !== 0x0800 && !v6) return [];
    const l3 = 14;
    const l4 = v6 ? l3 + 40 : l3 + (g[l3]! & 15) * 4;
    if (g[v6 ? l3 + 6 : l3 + 9] !== 6 || g.length < l4 + 20 || g.readUInt16BE(l4 + 2) !== 5001) return [];
    return [{ g, v6, l3, l4 }];
  });
}

describe('vhost-user offloads with DPDK testpmd virtio-user front-ends', { skip }, () => {
  let dir: string;
  before(() => { dir = mkdtempSync(join(tmpdir(), 'qnh-offpmd-')); });
  after(() => rmSync(dir, { recursive: true, force: true }));

  // tso: `tso set MSS` on the sender (RTE_MBUF_F_TX_TCP_SEG: virtio header
  // with gso_type TCPV4/6 and NEEDS_CSUM); otherwise TCP checksum offload alone.
  for (const tso of [true, false]) {
    const payload = tso ? 11000 : 1000;
    it(tso ? 'TSO: 11000-byte TCP frames pass as they are to an LRO receiver, are cut at MSS toward a receiver without offloads, and reach the uplink\'s kernel whole'
      : 'checksum offload only: partial TCP checksums pass to a GUEST_CSUM receiver, are completed toward a receiver without offloads, and reach the uplink\'s kernel partial',
    { timeout: 300_000 }, async (t) => {
      await withNetNs(async (ns) => {
        // No IPv6 on the veth: its router solicitations and MLD reports would
        // be flooded to the receivers and spoil their exact counts.
        ns.exec('sysctl', '-q', '-w', 'net.ipv6.conf.default.disable_ipv6=1');
        ns.ip('link', 'add', 'up0', 'type', 'veth', 'peer', 'name', 'far0');
        for (const l of ['up0', 'far0']) ns.ip('link', 'set', l, 'up');
        // The switch hands GSO and partial checksums to the kernel with their vnet
        // header; a device without tx offloads makes the kernel finish them
        // (validate_xmit_skb), so far0's packet socket sees checkable frames.
        ns.exec('ethtool', '-K', 'up0', 'tx', 'off');
        const tag = tso ? 'tso' : 'csum';
        const [a, b, c] = ['send', 'lro', 'plain'].map((n) => join(dir, `${tag}-${n}.sock`)) as [string, string, string];
        const ctl = join(dir, `${tag}-ctl.sock`);
        const frames = framesOf(payload);
        const pcap = join(dir, `${tag}.pcap`);
        writeFileSync(pcap, pcapFile(frames.map((f) => f.frame)));
        // Offload settings are per port and need it stopped (testpmd refuses them on a running port).
        const cmds = join(dir, `${tag}.cmds`);
        writeFileSync(cmds, ['port stop 1', 'csum set ip sw 1', 'csum set tcp hw 1', `tso set ${tso ? MSS : 0} 1`, 'port start 1', 'show port 1 tx_offload configuration', ''].join('\n'));

        const s = new Serve(['--socket', a, '--socket', b, '--socket', c, '--uplink', 'up0', '--control', ctl, TRUST], ns);
        const peer = new PacketPeer(ns, 'far0');
        const started: Testpmd[] = [];
        try {
          await s.ready([a, b, c, ctl]);
          await peer.started();
          // Receivers first. 0x1c = Rx UDP/TCP checksum + TCP LRO: the virtio PMD then
          // acks GUEST_CSUM and GUEST_TSO4/6 (it has no IPv4 checksum offload, so
          // --enable-rx-cksum, which asks for that too, makes configure fail; and
          // --max-lro-pkt-size is left alone: the virtio PMD reports no LRO size
          // limit, so ethdev refuses any value but the port's max Rx length, 1530,
          // while mergeable buffers take the 11 KB frames regardless).
          const lro = new Testpmd({ vdevs: [`net_virtio_user0,path=${b},queues=1`], forwardMode: 'rxonly', prefix: `qnh-offpmd-lro-${tag}`, lcores: '0@1,1@0', extra: ['--rx-offloads=0x1c'] });
          started.push(lro);
          const plain = new Testpmd({ vdevs: [`net_virtio_user0,path=${c},queues=1`], forwardMode: 'rxonly', prefix: `qnh-offpmd-plain-${tag}`, lcores: '0@0,1@1' });
          started.push(plain);
          for (const r of [lro, plain]) assert.ok(await r.waitFor(/Rx-pps/, 60000), r.output().slice(-2000));
          await until(async () => (await listPorts(ctl)).slice(1).every((p) => p.features !== '0x0'), 30000, () => 'receivers acked their features');

          // The sender: port 0 reads the pcap once (--no-flush-rx, or testpmd's
          // start-up flush eats it), port 1 is the switch's port. DPDK 22.11's
          // virtio-user sometimes fails its first handshake with EINTR: retried
          // while the switch has taken nothing. Its virtio port reports its link
          // down (testpmd's csum run with the pcap port beside it), so testpmd's
          // link check would wait its full 9 s at start and again at `port start`:
          // skipped, the frames counted on the switch are what says it works.
          let sender: TestpmdResult | null = null;
          let features: string[] = [];
          for (let attempt = 0; attempt < 3 && !sender; attempt++) {
            const tx = new Testpmd({
              vdevs: [`net_pcap0,rx_pcap=${pcap},tx_iface=lo`, `net_virtio_user1,path=${a},queues=1`], forwardMode: 'csum',
              prefix: `qnh-offpmd-send-${tag}-${attempt}`, lcores: '0@1,1@0', extra: ['--no-flush-rx', '--disable-link-check', `--cmdline-file=${cmds}`],
            });
            started.push(tx);
            const ok = await tx.waitFor(/Tx-pps/, 60000);
            const sentAll = ok && await until(async () => ((await listPorts(ctl))[0]!.stats.txFrames ?? 0) >= frames.length, 60000, () => '').then(() => true, () => false);
            if (sentAll) features = (await listPorts(ctl)).map((p) => p.features);
            const r = await tx.stop();
            if (sentAll || !handshakeFailed(r.output)) sender = r;
          }
          assert.ok(sender, 'the sender testpmd never connected');
          assert.match(sender.output, /Port : TCP_CKSUM TCP_TSO|Port : TCP_CKSUM/, 'the virtio PMD took the Tx offloads');
          assert.equal(sender.ports.find((p) => p.port === 1)?.txPackets, frames.length, `testpmd sent every frame of the pcap:\n${sender.output.slice(-2500)}`);

          const want = frames.map((f) => segmentsOf(f, tso)).reduce((x, y) => ({ frames: x.frames + y.frames, bytes: x.bytes + y.bytes }));
          const wholeBytes = frames.reduce((n, f) => n + f.frame.length, 0);
          await until(() => tcpOf(peer.frames).length >= want.frames, 60000, () => `uplink peer got ${tcpOf(peer.frames).length} of ${want.frames}`);
          // Each receiver's own count of frames and bytes, once its stats line caught up.
          const nic = async (r: Testpmd, frames: number): Promise<{ rxPackets: number; rxBytes: number }> => {
            await until(() => (lastNicStats(r.output())[0]?.rxPackets ?? -1) >= frames, 30000, () => r.output().slice(-1500));
            return lastNicStats(r.output())[0]!;
          };
          const lroGot = await nic(lro, frames.length);
          const plainGot = await nic(plain, want.frames);
          const ports = await listPorts(ctl);
          t.diagnostic(`features ${features.join(' ')}; counters ${JSON.stringify(ports.map((p) => p.stats))}`);
          t.diagnostic(`lro receiver ${JSON.stringify(lroGot)}, plain receiver ${JSON.stringify(plainGot)}, uplink ${tcpOf(peer.frames).length} frames`);

          // What each front-end negotiated, as the switch reports it.
          const [fa, fb, fc] = features as [string, string, string];
          assert.ok(bit(fa, Feature.CSUM), `sender acked CSUM (${fa})`);
          assert.equal(bit(fa, Feature.HOST_TSO4) && bit(fa, Feature.HOST_TSO6), tso, `sender HOST_TSO4/6 iff TSO configured (${fa})`);
          for (const f of [Feature.GUEST_CSUM, Feature.GUEST_TSO4, Feature.GUEST_TSO6]) assert.ok(bit(fb, f), `LRO receiver acked bit ${f} (${fb})`);
          for (const f of [Feature.CSUM, Feature.GUEST_CSUM, Feature.HOST_TSO4, Feature.GUEST_TSO4, Feature.GUEST_TSO6]) assert.ok(!bit(fc, f), `plain receiver acked no bit ${f} (${fc})`);

          // The switch: every frame taken, passed whole to the LRO receiver, made plain for the other two.
          const [sa, sb, sc] = ports.map((p) => p.stats) as [Stats, Stats, Stats];
          assert.equal(sa.txFrames, frames.length);
          assert.equal(sa.badOffload, 0);
          assert.equal(sa.txDropped, 0);
          assert.equal(sa.gsoPassed, tso ? 2 * frames.length : 0, 'GSO frames passed as they are (LRO receiver, uplink kernel)');
          assert.equal(sa.gsoSegmented, tso ? frames.length : 0, 'GSO frames segmented here (plain receiver)');
          assert.equal(sa.csumCompleted, tso ? 0 : frames.length, 'partial checksums completed here (plain receiver)');
          assert.equal(sb.rxFrames, frames.length);
          assert.equal(sc.rxFrames, want.frames);
          assert.equal(sb.rxDropped + sc.rxDropped, 0);
          // The receivers: frames and bytes (their PMD counts without the virtio header).
          assert.deepEqual([lroGot.rxPackets, lroGot.rxBytes], [frames.length, wholeBytes], 'LRO receiver: every frame whole');
          assert.deepEqual([plainGot.rxPackets, plainGot.rxBytes], [want.frames, want.bytes], 'plain receiver: every segment');

          // The uplink's copies, checked independently: sizes, checksums, payload in order.
          const got = tcpOf(peer.frames);
          assert.equal(got.length, want.frames);
          assert.equal(got.reduce((n, x) => n + x.g.length, 0), want.bytes);
          for (const v6 of [false, true]) {
            const mine = got.filter((x) => x.v6 === v6);
            for (const x of mine) {
              assert.ok(tcpChecksumOk(x.g, x.l3, x.l4, v6), 'TCP checksum verifies');
              if (!v6) assert.equal(sum16(x.g.subarray(x.l3, x.l4)), 0xffff, 'IPv4 header checksum verifies');
              if (tso) assert.ok(x.g.length - x.l4 - 20 <= MSS, 'no segment above MSS');
            }
            const bySeq = mine.map((x) => ({ seq: x.g.readUInt32BE(x.l4 + 4), data: x.g.subarray(x.l4 + 20) })).sort((p, q) => p.seq - q.seq);
            const first = frames.find((f) => f.v6 === v6)!;
            let next = first.seq;
            for (const p of bySeq) {
              assert.equal(p.seq, next, `${v6 ? 'IPv6' : 'IPv4'}: contiguous sequence numbers`);
              next += p.data.length;
            }
            const stream = Buffer.concat(bySeq.map((p) => p.data));
            const sent = Buffer.concat(frames.filter((f) => f.v6 === v6).map((f) => f.frame.subarray(f.hdrEnd)));
            assert.ok(stream.equals(sent), `${v6 ? 'IPv6' : 'IPv4'}: payload byte-exact through the uplink`);
          }
        } finally {
          for (const r of started) await r.stop();
          peer.stop();
          await s.stop();
        }
      }, 'qnhop');
    });
  }
});
