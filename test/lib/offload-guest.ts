// A switch port with a mock guest behind it for the offload unit tests: rings
// of 64, a 12-byte vnet header, given offloads both ways, 48 receive buffers
// big enough for a 64 KiB frame; frames sent with their header as Linux sends
// a GSO skb, and received ones read back with their header.
import type { QueueSpec } from '../../src/vhost-user/dataplane/api.js';
import { WorkerPort } from '../../src/vhost-user/dataplane/port.js';
import type { SwitchCore } from '../../src/vhost-user/dataplane/switch-core.js';
import { VEB } from '../../src/vhost-user/switch/forwarding.js';
import { F_NEEDS_CSUM, VnetHeader } from '../../src/vhost-user/switch/offload.js';
import { MockGuest, MockVirtq } from './mock-driver.js';
import type { tcpFrame } from './tcp-frames.js';

/** The buffers region's gpa: TX frames from here (0x11000 apart), RX buffers from OFFLOAD_RXBUF. */
export const OFFLOAD_BUF = 0x100000;
export const OFFLOAD_RXBUF = OFFLOAD_BUF + 0x200000;
/** Header + a 64 KiB frame. */
export const OFFLOAD_RX_SIZE = 0x11000;

/** Guest n's MAC, 52:54:00:00:00:n. */
export const guestMac = (n: number): number[] => [0x52, 0x54, 0, 0, 0, n];

export interface OffloadGuest { port: WorkerPort; rx: MockVirtq; tx: MockVirtq; g: MockGuest; sent: number }

/** Port `id` on `sw` (veb), its MAC learned when `learn` is set. */
export function offloadGuest(sw: SwitchCore, id: number, offloads: number, learn = false): OffloadGuest {
  const g = new MockGuest([{ gpa: 0, size: 0x10000, ua: 0x7f0000000000 }, { gpa: OFFLOAD_BUF, size: 0x400000, ua: 0x7f1000000000 }]);
  const port = new WorkerPort(id, 1);
  port.mem = g.mem;
  const drv = [MockVirtq.at(g, 64, 0x1000), MockVirtq.at(g, 64, 0x6000)];
  for (let q = 0; q < 2; q++) {
    const spec: QueueSpec = {
      size: 64, desc: drv[q]!.descUA, avail: drv[q]!.availUA, used: drv[q]!.usedUA, lastAvail: 0, eventIdx: true, indirect: true,
      mrgRxbuf: true, hdrLen: 12, kickFd: -1, callFd: -1, enabled: true, logAll: false, logUsedGpa: -1, sendOffloads: offloads, recvOffloads: offloads,
    };
    port.startQueue(q, spec);
  }
  sw.ports.set(id, port);
  sw.topo.set(id, VEB);
  if (learn) sw.fdb.learn(0x525400000000 + id, id, sw.now);
  for (let i = 0; i < 48; i++) drv[0]!.addChain([{ addr: OFFLOAD_RXBUF + OFFLOAD_RX_SIZE * i, len: OFFLOAD_RX_SIZE, write: true }]);
  return { port, rx: drv[0]!, tx: drv[1]!, g, sent: 0 };
}

/** The guest sends `frame` behind `h` (zeros when null), header and frame in separate descriptors as Linux sends a GSO skb. */
export function sendWithHeader(a: OffloadGuest, h: VnetHeader | null, frame: Uint8Array): void {
  const gpa = OFFLOAD_BUF + 0x11000 * a.sent++;
  const hb = new Uint8Array(12);
  h?.write(hb, 0);
  a.g.write(gpa, hb);
  a.g.write(gpa + 12, frame);
  a.tx.addChain([{ addr: gpa, len: 12 }, { addr: gpa + 12, len: frame.length }]);
}

/** What the guest received since the last call, header and frame. */
export function receivedWithHeader(b: OffloadGuest): { hdr: VnetHeader; frame: Buffer }[] {
  return b.rx.takeUsed().map((u) => {
    const gpa = OFFLOAD_RXBUF + OFFLOAD_RX_SIZE * u.id;
    const hdr = new VnetHeader();
    hdr.read(b.g.read(gpa, 12), 0);
    return { hdr, frame: Buffer.from(b.g.read(gpa + 12, u.len - 12)) };
  });
}

/** A TCP GSO header for `f`: checksum partial at the TCP checksum, segments of `mss`. */
export const gsoHeader = (f: ReturnType<typeof tcpFrame>, type: number, mss: number): VnetHeader =>
  Object.assign(new VnetHeader(), { flags: F_NEEDS_CSUM, gsoType: type, gsoSize: mss, hdrLen: f.hdrEnd, csumStart: f.l4, csumOffset: 16 });
