// Micro-benchmark of the switch data path in one thread (no generator, no
// other process): guest A's TX ring through SwitchCore (MAC peek, learning,
// forwarding decision) into guest B's RX ring, or into nothing (a sink), with
// the simulated guests of test/lib/mock-driver.ts refilling between batches.
// Compare with bench/virtq-forward.ts (the bare Forwarder, no switching).
//
//   node dist/bench/switch-forward.js [seconds] [frame bytes]
import { GuestTxPipe } from '../src/vhost-user/dataplane/pipes.js';
import { WorkerPort } from '../src/vhost-user/dataplane/port.js';
import { SwitchCore } from '../src/vhost-user/dataplane/switch-core.js';
import type { QueueSpec } from '../src/vhost-user/dataplane/api.js';
import { VEB } from '../src/vhost-user/switch/forwarding.js';
import { MockGuest, MockVirtq } from '../test/lib/mock-driver.js';

const QSIZE = 256;
const HDR = 12;
const BUF = 0x100000;

function guest(sw: SwitchCore, id: number): { port: WorkerPort; drv: MockVirtq[]; g: MockGuest } {
  const g = new MockGuest([
    { gpa: 0, size: 0x10000, ua: 0x7f0000000000 },
    { gpa: BUF, size: 2 * QSIZE * 0x1000, ua: 0x7f1000000000 },
  ], { shared: true, guard: 64 });
  const port = new WorkerPort(id, 1);
  port.mem = g.mem;
  const drv = [MockVirtq.at(g, QSIZE, 0x1000), MockVirtq.at(g, QSIZE, 0x8000)];
  for (let q = 0; q < 2; q++) {
    const spec: QueueSpec = { size: QSIZE, desc: drv[q]!.descUA, avail: drv[q]!.availUA, used: drv[q]!.usedUA, lastAvail: 0, eventIdx: true, indirect: true, mrgRxbuf: true, hdrLen: HDR, kickFd: -1, callFd: -1, enabled: true, logAll: false, logUsedGpa: -1, sendOffloads: 0, recvOffloads: 0 };
    port.startQueue(q, spec);
  }
  sw.ports.set(id, port);
  sw.topo.set(id, VEB);
  return { port, drv, g };
}

// ports 1: a sink; 2: port to port; 3: A's frames alternate between B and C
// (two streams interleaved frame by frame: the decision cache never hits).
function run(ports: number, frameLen: number, seconds: number): number {
  const sw = new SwitchCore(() => undefined);
  const a = guest(sw, 0);
  const peers = ports > 1 ? [guest(sw, 1)] : [];
  if (ports > 2) peers.push(guest(sw, 2));
  sw.refreshTopology();
  sw.now = Date.now();
  // B is 52:54:00:00:00:0b, C ...:0c, both learned (so A's frames are unicast).
  for (let p = 0; p < peers.length; p++) sw.fdb.learn(0x52540000000b + p, p + 1, sw.now);
  const frame = new Uint8Array(frameLen);
  frame.set([0x52, 0x54, 0, 0, 0, 0x0b, 0x52, 0x54, 0, 0, 0, 0x0a, 0x88, 0xb5]);
  for (let i = 0; i < QSIZE; i++) {
    const gpa = BUF + 0x1000 * i;
    frame[5] = 0x0b + (peers.length > 1 ? i & 1 : 0);
    a.g.write(gpa + HDR, frame);
    a.drv[1]!.addChain([{ addr: gpa, len: HDR + frameLen }]);
    for (const b of peers) b.drv[0]!.addChain([{ addr: BUF + QSIZE * 0x1000 + 0x1000 * i, len: 2048, write: true }]);
  }
  const pipe = new GuestTxPipe(sw, a.port, a.port.queues[1]!);
  // Frames per second of this thread's CPU time (not wall time): on a shared
  // 2-core machine the thread is descheduled at random, and only CPU time
  // stays comparable between runs and between code versions.
  const window = (ns: number): number => {
    let frames = 0;
    const start = process.hrtime.bigint();
    const cpu0 = process.cpuUsage();
    while (Number(process.hrtime.bigint() - start) < ns) {
      frames += pipe.run();
      a.drv[1]!.recycleUsed();
      for (const b of peers) b.drv[0]!.recycleUsed();
    }
    const cpu = process.cpuUsage(cpu0);
    return frames / (cpu.user + cpu.system);
  };
  window(3e8);
  const xs: number[] = [];
  for (let i = 0; i < Math.max(3, seconds * 5); i++) xs.push(window(2e8));
  xs.sort((x, y) => x - y);
  return xs[xs.length >> 1]!;
}

const seconds = Number(process.argv[2] ?? 2);
const frameLen = Number(process.argv[3] ?? 64);
console.log(`switch data path, ${frameLen} B, median of 0.2 s windows, per CPU second: sink ${run(1, frameLen, seconds).toFixed(2)} Mpps, port to port ${run(2, frameLen, seconds).toFixed(2)} Mpps, alternating between two ports ${run(3, frameLen, seconds).toFixed(2)} Mpps`);
