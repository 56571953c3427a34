// The data-path worker thread. It owns the guest memory mappings and rings of
// every port; the main thread only sends it commands. Two modes:
// - event: sleep in the event loop; kick eventfds and tap readability wake
//   the pipes; notifications are re-enabled before sleeping (no lost kicks).
// - busy: spin over the pipes, never waiting for kicks (guests are told not to
//   kick), checking the command port between batches; lowest latency and
//   highest rate, at the cost of one core.
import { parentPort, receiveMessageOnPort, workerData } from 'node:worker_threads';
import { c } from '../../sys/libc.js';
import { eventfdDrain } from '../../sys/eventfd.js';
import { unwatch, watchReadable } from '../../sys/poller.js';
import type { QueueSpec, RegionSpec } from './api.js';
import { RingToDrop, RingToRing, RingToTap, TapToRing, type Pipe } from './pipes.js';
import type { PeerSpec, PollMode, WorkerCommand } from './pool.js';
import { WorkerPort } from './port.js';
import { writeFrame, ChainScratch } from '../virtq/index.js';

const port = parentPort!;
const mode: PollMode = (workerData as { mode: PollMode }).mode;
const ports = new Map<number, WorkerPort>();
let pipes: Pipe[] = [];
const watchedKicks = new Set<number>();
const watchedTaps = new Set<number>();
let running = true;
let pumpScheduled = false;
let pollTimer: NodeJS.Timeout | null = null;

function rebuild(): void {
  const next: Pipe[] = [];
  for (const p of ports.values()) {
    for (let pair = 0; pair < p.queuePairs; pair++) {
      const tx = p.queues[pair * 2 + 1];
      if (tx) {
        const peer = p.peer;
        if (!tx.enabled) next.push(new RingToDrop(p, tx, false));
        else if (peer.kind === 'tap') next.push(new RingToTap(p, tx, peer.fd));
        else if (peer.kind === 'port') {
          const other = ports.get(peer.port);
          const rx = other?.rxQueue(pair);
          next.push(other && rx ? new RingToRing(p, tx, other, rx) : new RingToDrop(p, tx, false));
        } else next.push(new RingToDrop(p, tx, true));
      }
    }
    if (p.peer.kind === 'tap') {
      const rx = p.rxQueue(0);
      if (rx) next.push(new TapToRing(p, rx, p.peer.fd));
    }
  }
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
      let more = false;
      for (const pt of ports.values()) for (const q of pt.queues) if (q && q.q.enableNotify()) more = true;
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
      for (let m = receiveMessageOnPort(port); m; m = receiveMessageOnPort(port)) handle(m.message as WorkerCommand);
      if (pipes.length === 0) Atomics.wait(idle, 0, 0, 1);
    }
  }
}

// ---- commands -----------------------------------------------------------

function need(id: number | undefined): WorkerPort {
  const p = id === undefined ? undefined : ports.get(id);
  if (!p) throw new Error(`no port ${String(id)}`);
  return p;
}

function exec(cmd: WorkerCommand): unknown {
  switch (cmd.op) {
    case 'addPort':
      ports.set(cmd.port!, new WorkerPort(cmd.port!, cmd.queuePairs as number, cmd.peer as PeerSpec));
      return null;
    case 'removePort':
      need(cmd.port).reset();
      ports.delete(cmd.port!);
      rebuild();
      return null;
    case 'setMemory':
      need(cmd.port).setMemory(cmd.regions as RegionSpec[]);
      rebuild();
      return null;
    case 'startQueue':
      need(cmd.port).startQueue(cmd.q as number, cmd.spec as QueueSpec);
      rebuild();
      return null;
    case 'stopQueue': {
      const base = need(cmd.port).stopQueue(cmd.q as number);
      rebuild();
      return base;
    }
    case 'setCall': {
      const q = need(cmd.port).queues[cmd.q as number];
      if (q) q.callFd = cmd.fd as number;
      return null;
    }
    case 'setEnabled': {
      const q = need(cmd.port).queues[cmd.q as number];
      if (q) q.enabled = cmd.enabled as boolean;
      rebuild();
      return null;
    }
    case 'inject': {
      const p = need(cmd.port);
      const frame = cmd.frame as Uint8Array;
      if (p.peer.kind === 'tap') c.write(p.peer.fd, Buffer.from(frame), frame.length);
      else if (p.peer.kind === 'port') {
        const rx = ports.get(p.peer.port)?.rxQueue(0);
        if (rx) {
          writeFrame(rx.q, new ChainScratch(), frame, 0, frame.length, rx.spec.hdrLen, rx.spec.mrgRxbuf);
          rx.q.flushUsed();
        }
      }
      return null;
    }
    case 'reset':
      need(cmd.port).reset();
      rebuild();
      return null;
    case 'stats':
      port.postMessage({ stats: [...ports.values()].map((p) => [p.id, p.collectStats()]) });
      return null;
    case 'shutdown':
      running = false;
      for (const p of ports.values()) p.reset();
      pipes = [];
      for (const fd of [...watchedKicks, ...watchedTaps]) unwatch(fd);
      watchedKicks.clear();
      watchedTaps.clear();
      if (pollTimer) clearInterval(pollTimer);
      return null;
    default:
      throw new Error(`unknown data path command ${cmd.op}`);
  }
}

function handle(cmd: WorkerCommand): void {
  try {
    const result = exec(cmd);
    port.postMessage({ id: cmd.id, ok: true, result });
  } catch (e) {
    port.postMessage({ id: cmd.id, ok: false, error: (e as Error).message });
  }
}

if (mode === 'busy') {
  busyLoop();
  port.close();
} else {
  port.on('message', (m: WorkerCommand) => {
    handle(m);
    if (!running) port.close();
  });
}
