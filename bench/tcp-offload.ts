// What offloads save the switch, in one thread (no generator, no other
// process): TCP payload bytes per CPU second from guest A's TX ring through
// SwitchCore into guest B's RX ring (4 KiB mergeable buffers, as Linux posts),
// for the same stream carried three ways:
// - 64 KiB GSO frames to a guest that negotiated TSO (passed as they are);
// - 64 KiB GSO frames to a guest without offloads (segmented here, every
//   checksum computed here);
// - 1514-byte frames, the guest having segmented and checksummed them itself
//   (offloads off: the switch only moves them), header and frame in two
//   descriptors as Linux sends a TCP skb (its linear part, then the page
//   fragment): the TypeScript path;
// - the same in one descriptor: the C fast path's best case (everything in
//   cache, one frame reused), an upper bound rather than a real guest;
// and the same stream out of the uplink (AF_PACKET TPACKET_V2 TX ring over
// plain memory, the kernel's part played by a kick that frees every slot):
// - uplink-gso-passed: 64 KiB GSO frames with their vnet header
//   (PACKET_VNET_HDR, offloads on) to the ring-less sender the uplink uses
//   for frames bigger than a slot (its write() not counted);
// - uplink-gso-segmented: the same frames segmented here (no vnet header:
//   the uplink before offloads, or --offloads off);
// - uplink-mtu-frames: 1514-byte frames from the guest, two descriptors.
// The kernel's own cost (segmenting on a device without TSO, or none on a
// veth that hands the skb whole to its peer) is not in these numbers.
// What the sending guest's kernel saves is not in these numbers (TCG guests
// cannot show it); this is the switch's side only.
//
//   node dist/bench/tcp-offload.js [seconds]
import type { QueueSpec } from '../src/vhost-user/dataplane/api.js';
import { GuestTxPipe } from '../src/vhost-user/dataplane/pipes.js';
import { WorkerPort } from '../src/vhost-user/dataplane/port.js';
import { SwitchCore } from '../src/vhost-user/dataplane/switch-core.js';
import { ringsBytes } from '../src/sys/packet.js';
import { PACKET_VNET_LEN, ringGeometry } from '../src/sys/tpacket.js';
import { PacketRingIo } from '../src/vhost-user/dataplane/uplink-io.js';
import { UPLINK } from '../src/vhost-user/switch/fdb.js';
import { VEB } from '../src/vhost-user/switch/forwarding.js';
import { CAN_ALL, F_NEEDS_CSUM, GSO_TCPV4, VnetHeader } from '../src/vhost-user/switch/offload.js';
import { MockGuest, MockVirtq } from '../test/lib/mock-driver.js';
import { tcpFrame } from '../test/lib/tcp-frames.js';

const QSIZE = 256;
const BUF = 0x100000;
const TX_HDR = BUF; // one header and one frame, shared by every TX chain
const TX_FRAME = BUF + 0x1000;
const RX_BUFS = BUF + 0x20000;
const RX_BUF_LEN = 4096;
const MSS = 1448; // 1500 MTU, TCP timestamps

export type OffloadCase = 'gso-passed' | 'gso-segmented' | 'mtu-frames' | 'mtu-frames-1desc' | 'uplink-gso-passed' | 'uplink-gso-segmented' | 'uplink-mtu-frames';

/**
 * An uplink TX ring as uplink.ts makes it (4096 slots of 2 KiB) whose
 * "kernel" frees every slot at each kick; with `vnet`, GSO frames go to a
 * ring-less sender that takes them (the write() to the kernel not counted).
 */
function memoryUplink(vnet: boolean): PacketRingIo {
  const v = vnet ? PACKET_VNET_LEN : 0;
  const g = ringGeometry(1518, 8 << 20, 256, v);
  const rings = { rx: ringGeometry(1518, 0, 64), tx: g };
  const mem = new ArrayBuffer(ringsBytes(rings));
  const i32 = new Int32Array(mem);
  const txBase = rings.rx.blockSize * rings.rx.blockCount;
  const kick = (): boolean => {
    for (let i = 0; i < g.frameCount; i++) i32[(txBase + i * g.frameSize) >> 2] = 0;
    return true;
  };
  return new PacketRingIo(-1, rings, mem, kick, () => {}, vnet, vnet ? { read: () => -1, write: () => true } : null);
}

function guest(sw: SwitchCore, id: number, offloads: number): { port: WorkerPort; drv: MockVirtq[]; g: MockGuest } {
  const g = new MockGuest([{ gpa: 0, size: 0x10000, ua: 0x7f0000000000 }, { gpa: BUF, size: 0x20000 + QSIZE * RX_BUF_LEN, ua: 0x7f1000000000 }]);
  const port = new WorkerPort(id, 1);
  port.mem = g.mem;
  const drv = [MockVirtq.at(g, QSIZE, 0x1000), MockVirtq.at(g, QSIZE, 0x8000)];
  for (let q = 0; q < 2; q++) {
    const spec: QueueSpec = {
      size: QSIZE, desc: drv[q]!.descUA, avail: drv[q]!.availUA, used: drv[q]!.usedUA, lastAvail: 0, eventIdx: true, indirect: true,
      mrgRxbuf: true, hdrLen: 12, kickFd: -1, callFd: -1, enabled: true, logAll: false, logUsedGpa: -1, sendOffloads: offloads, recvOffloads: offloads,
    };
    port.startQueue(q, spec);
  }
  sw.ports.set(id, port);
  sw.topo.set(id, VEB);
  return { port, drv, g };
}

/** TCP payload Gbit per CPU second (median of 0.2 s windows). */
function runTcpOffload(kind: OffloadCase, seconds: number): { gbitPerCpuSecond: number; framesPerCpuSecond: number } {
  const sw = new SwitchCore(() => undefined);
  const a = guest(sw, 0, CAN_ALL);
  const b = guest(sw, 1, kind === 'gso-passed' ? CAN_ALL : 0);
  const up = kind.startsWith('uplink-');
  if (up) sw.uplink = memoryUplink(kind === 'uplink-gso-passed');
  sw.refreshTopology();
  sw.now = Date.now();
  sw.fdb.learn(0x52540000000b, up ? UPLINK : 1, sw.now);
  const mtu = kind === 'mtu-frames' || kind === 'mtu-frames-1desc' || kind === 'uplink-mtu-frames';
  // Toward the uplink, what Linux's TCP makes of a 64 KiB size goal (whole
  // segments: a 65226-byte frame).
  const payload = mtu ? MSS : up ? 45 * MSS : 65535 - 14 - 20 - 32;
  const f = tcpFrame({ payload, tcpOpts: 12, dstMac: [0x52, 0x54, 0, 0, 0, 0x0b], srcMac: [0x52, 0x54, 0, 0, 0, 0x0a] });
  const hdr = new Uint8Array(12);
  if (!mtu) {
    Object.assign(new VnetHeader(), { flags: F_NEEDS_CSUM, gsoType: GSO_TCPV4, gsoSize: MSS, hdrLen: f.hdrEnd, csumStart: f.l4, csumOffset: 16 }).write(hdr, 0);
  }
  a.g.write(TX_HDR, hdr);
  a.g.write(TX_FRAME - 12, hdr);
  a.g.write(TX_FRAME, f.frame);
  for (let i = 0; i < QSIZE; i++) {
    // Two descriptors per chain (header, frame) but for the 1desc case.
    if (kind === 'mtu-frames-1desc') a.drv[1]!.addChain([{ addr: TX_FRAME - 12, len: 12 + f.frame.length }]);
    else if (i < QSIZE / 2) a.drv[1]!.addChain([{ addr: TX_HDR, len: 12 }, { addr: TX_FRAME, len: f.frame.length }]);
    b.drv[0]!.addChain([{ addr: RX_BUFS + RX_BUF_LEN * i, len: RX_BUF_LEN, write: true }]);
  }
  const pipe = new GuestTxPipe(sw, a.port, a.port.queues[1]!);
  const window = (ns: number): number => {
    let frames = 0;
    const start = process.hrtime.bigint();
    const cpu0 = process.cpuUsage();
    while (Number(process.hrtime.bigint() - start) < ns) {
      frames += pipe.run();
      a.drv[1]!.recycleUsed();
      b.drv[0]!.recycleUsed();
    }
    const cpu = process.cpuUsage(cpu0);
    return frames / ((cpu.user + cpu.system) / 1e6);
  };
  window(3e8);
  const xs: number[] = [];
  for (let i = 0; i < Math.max(3, seconds * 5); i++) xs.push(window(2e8));
  xs.sort((x, y) => x - y);
  const fps = xs[xs.length >> 1]!;
  if (a.port.stats.badOffload !== 0 || (up ? sw.uplinkStats.txFrames : b.port.stats.rxFrames) === 0 || sw.uplinkStats.txDropped !== 0) throw new Error(`tcp-offload ${kind}: nothing delivered (${JSON.stringify(a.port.stats)})`);
  return { gbitPerCpuSecond: (fps * payload * 8) / 1e9, framesPerCpuSecond: fps };
}

export function benchTcpOffload(seconds: number): { rows: { case: OffloadCase; gbitPerCpuSecond: number; framesPerCpuSecond: number }[] } {
  const rows = (['gso-passed', 'gso-segmented', 'mtu-frames', 'mtu-frames-1desc', 'uplink-gso-passed', 'uplink-gso-segmented', 'uplink-mtu-frames'] as const).map((k) => ({ case: k, ...runTcpOffload(k, seconds) }));
  return { rows };
}

if (process.argv[1]?.endsWith('tcp-offload.js')) {
  const r = benchTcpOffload(Number(process.argv[2] ?? 2));
  for (const row of r.rows) console.log(`${row.case}: ${row.gbitPerCpuSecond.toFixed(1)} Gbit/s of TCP payload per CPU second (${(row.framesPerCpuSecond / 1e3).toFixed(1)} k frames/s)`);
}
