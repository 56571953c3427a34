// The data-path worker thread. It owns the guest memory mappings and rings of
// every port and the switch between them (switch-core.ts); the main thread
// only sends it commands (commands.ts). Two modes:
// - event: sleep in the event loop; kick eventfds and tap readability wake
//   the pipes; notifications are re-enabled before sleeping (no lost kicks).
// - busy: spin over the pipes, never waiting for kicks (guests are told not to
//   kick), checking the command port between batches; lowest latency and
//   highest rate, at the cost of one core.
import { parentPort, receiveMessageOnPort, workerData } from 'node:worker_threads';
import { eventfdDrain } from '../../sys/eventfd.js';
import { unwatch, watchReadable } from '../../sys/poller.js';
import { modeCode } from '../switch/forwarding.js';
import { UPLINK_STATS_ID, type CommandResults, type Op, type PollMode, type Request, type WorkerCommand, type WorkerMessage } from './commands.js';
import { GuestTxPipe, RingToDrop, UplinkRxPipe, type Pipe } from './pipes.js';
import { WorkerPort } from './port.js';
import { SwitchCore } from './switch-core.js';
import { openPacketRingIo, TapIo } from './uplink-io.js';

const port = parentPort!;
const post = (m: WorkerMessage): void => port.postMessage(m);
const mode: PollMode = (workerData as { mode: PollMode }).mode;
const sw = new SwitchCore(post);
const ports = sw.ports;
let pipes: Pipe[] = [];
const watchedKicks = new Set<number>();
const watchedTaps = new Set<number>();
let running = true;
let pumpScheduled = false;
let pollTimer: NodeJS.Timeout | null = null;
// MAC ageing needs no per-frame clock read: a coarse clock ticks every 100 ms.
let sweepAt = 0;
function tick(): void {
  sw.now = Date.now();
  if (sw.now >= sweepAt) { sw.fdb.sweep(sw.now); sweepAt = sw.now + 10_000; }
}
tick();
const clock = setInterval(tick, 100);

function rebuild(): void {
  const next: Pipe[] = [];
  sw.forget();
  sw.refreshTopology();
  for (const p of ports.values()) {
    for (let pair = 0; pair < p.queuePairs; pair++) {
      const tx = p.queues[pair * 2 + 1];
      if (tx) next.push(tx.enabled ? new GuestTxPipe(sw, p, tx) : new RingToDrop(p, tx));
    }
  }
  if (sw.uplink) next.push(new UplinkRxPipe(sw, sw.uplink));
  pipes = next;
  if (mode === 'event') rewatch();
  else for (const p of ports.values()) for (const q of p.queues) q?.q.disableNotify();
}

// ---- event mode ---------------------------------------------------------

function rewatch(): void {
  const kicks = new Set<number>();
  let nofd = false;
  for (const p of ports.values()) {
    for (const q of p.queues) {
      if (!q) continue;
      if (q.kickFd >= 0) kicks.add(q.kickFd);
      else nofd = true;
    }
  }
  for (const fd of watchedKicks) if (!kicks.has(fd)) { unwatch(fd); watchedKicks.delete(fd); }
  for (const fd of kicks) {
    if (watchedKicks.has(fd)) continue;
    if (watchReadable(fd, () => { eventfdDrain(fd); schedulePump(); })) watchedKicks.add(fd);
  }
  updateTapWatches();
  // Rings started with NOFD have no kick: poll them every millisecond.
  if (nofd && !pollTimer) pollTimer = setInterval(schedulePump, 1);
  if (!nofd && pollTimer) { clearInterval(pollTimer); pollTimer = null; }
  schedulePump();
}

function updateTapWatches(): void {
  // Level-triggered: a tap with frames but a guest without buffers would wake
  // us forever, so a stalled tap pipe is not watched until the guest kicks.
  const want = new Set<number>();
  for (const p of pipes) if (p.readFd >= 0 && !p.stalled) want.add(p.readFd);
  for (const fd of watchedTaps) if (!want.has(fd)) { unwatch(fd); watchedTaps.delete(fd); }
  for (const fd of want) {
    if (!watchedTaps.has(fd) && watchReadable(fd, schedulePump)) watchedTaps.add(fd);
  }
}

function schedulePump(): void {
  if (pumpScheduled || !running) return;
  pumpScheduled = true;
  setImmediate(eventPump);
}

function eventPump(): void {
  pumpScheduled = false;
  // Bounded, then yield to the event loop so commands and other fds get served.
  for (let round = 0; round < 64; round++) {
    let work = 0;
    for (const p of pipes) work += p.run();
    if (work === 0) {
      // Ask for kicks again, then re-check: buffers posted before the
      // re-enable would otherwise never be noticed.
      // An RX ring with buffers posted is the normal idle state: it only
      // counts as work when a sender is stalled waiting for it (otherwise the
      // pump would spin on every guest that keeps RX buffers ready).
      let stalled = false;
      for (const p of pipes) if (p.stalled) stalled = true;
      let more = false;
      for (const pt of ports.values()) for (const q of pt.queues) if (q && q.q.enableNotify() && (stalled || !q.isRx)) more = true;
      if (!more) {
        updateTapWatches();
        return;
      }
    }
  }
  schedulePump();
}

// ---- busy mode ----------------------------------------------------------

const idle = new Int32Array(new SharedArrayBuffer(4));
function busyLoop(): void {
  let iter = 0;
  while (running) {
    let work = 0;
    for (let i = 0; i < pipes.length; i++) work += pipes[i]!.run();
    // receiveMessageOnPort costs about a microsecond: check commands every
    // 1024 rounds, not on every idle round, or it dominates the loop latency.
    if ((++iter & 1023) === 0) {
      tick(); // timers do not run while we spin
      for (let m = receiveMessageOnPort(port); m; m = receiveMessageOnPort(port)) handle(m.message as Request);
      if (pipes.length === 0) Atomics.wait(idle, 0, 0, 1);
    }
  }
}

// ---- commands -----------------------------------------------------------

function need(id: number): WorkerPort {
  const p = ports.get(id);
  if (!p) throw new Error(`no port ${id}`);
  return p;
}

type Handlers = { [O in Op]: (cmd: Extract<WorkerCommand, { op: O }>) => CommandResults[O] };

const handlers: Handlers = {
  addPort: (cmd) => {
    if (ports.has(cmd.port)) throw new Error(`port ${cmd.port} exists`);
    ports.set(cmd.port, new WorkerPort(cmd.port, cmd.queuePairs));
    sw.topo.set(cmd.port, modeCode(cmd.mode));
    rebuild();
    return null;
  },
  removePort: (cmd) => {
    need(cmd.port).reset();
    ports.delete(cmd.port);
    sw.topo.remove(cmd.port);
    sw.fdb.flushPort(cmd.port);
    rebuild();
    return null;
  },
  setMode: (cmd) => {
    need(cmd.port);
    sw.topo.set(cmd.port, modeCode(cmd.mode));
    sw.refreshTopology();
    return null;
  },
  setUplink: (cmd) => {
    const old = sw.uplink;
    sw.uplink = null;
    rebuild();
    old?.close();
    // The rings are mapped here, in the thread that uses them (a mapping is
    // not transferable), and unmapped before the main thread closes the fd.
    if (cmd.fd >= 0) sw.uplink = cmd.rings ? openPacketRingIo(cmd.fd, cmd.rings, cmd.vnetHdr ?? false, cmd.senderFd ?? -1, cmd.xsk ?? null) : new TapIo(cmd.fd, cmd.vnetHdr ?? false);
    rebuild();
    return null;
  },
  setMemory: (cmd) => {
    need(cmd.port).setMemory(cmd.regions);
    rebuild();
    return null;
  },
  setLog: (cmd) => {
    need(cmd.port).setLog(cmd.log);
    return null;
  },
  startQueue: (cmd) => {
    need(cmd.port).startQueue(cmd.q, cmd.spec);
    rebuild();
    return null;
  },
  stopQueue: (cmd) => {
    const base = need(cmd.port).stopQueue(cmd.q);
    rebuild();
    return base;
  },
  setCall: (cmd) => {
    const q = need(cmd.port).queues[cmd.q];
    if (q) q.callFd = cmd.fd;
    return null;
  },
  setEnabled: (cmd) => {
    const q = need(cmd.port).queues[cmd.q];
    if (q) q.enabled = cmd.enabled;
    rebuild();
    return null;
  },
  inject: (cmd) => {
    need(cmd.port);
    tick();
    sw.fromFlat(cmd.port, cmd.frame, 0, cmd.frame.length);
    sw.flush();
    return null;
  },
  reset: (cmd) => {
    const p = need(cmd.port);
    p.reset();
    // A new guest (or the same one rebooted) may sit behind the port now.
    sw.fdb.flushPort(p.id);
    rebuild();
    return null;
  },
  stats: () => {
    const all: [number, ReturnType<WorkerPort['collectStats']>][] = [...ports.values()].map((p) => [p.id, p.collectStats()]);
    all.push([UPLINK_STATS_ID, sw.uplinkStats]);
    post({ stats: all });
    return null;
  },
  macs: () => { tick(); return sw.fdb.entries(sw.now); },
  shutdown: () => {
    running = false;
    for (const p of ports.values()) p.reset();
    pipes = [];
    for (const fd of [...watchedKicks, ...watchedTaps]) unwatch(fd);
    sw.uplink?.close();
    sw.uplink = null;
    watchedKicks.clear();
    watchedTaps.clear();
    if (pollTimer) clearInterval(pollTimer);
    clearInterval(clock);
    return null;
  },
};

function handle(req: Request): void {
  try {
    const h = handlers[req.op] as ((c: WorkerCommand) => unknown) | undefined;
    if (!h) throw new Error(`unknown data path command ${String(req.op)}`);
    post({ id: req.id, ok: true, result: h(req) });
  } catch (e) {
    post({ id: req.id, ok: false, error: (e as Error).message });
  }
}

if (mode === 'busy') {
  busyLoop();
  port.close();
} else {
  port.on('message', (m: Request) => {
    handle(m);
    if (!running) port.close();
  });
}
