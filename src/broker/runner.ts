// Runs broker requests in child processes, so that nothing a request does
// (ip, nft, dnsmasq, ioctls, a send on QEMU's socket, a close of a caller's
// fd) ever blocks the broker's event loop.
//
// Why child processes and not worker threads: a request may hang in the
// kernel on something its caller controls (an fd on a stalled FUSE file, a
// lock), and only a process can be killed out of that; a worker thread stuck
// in a syscall is lost for good. Children are reused, one request at a time
// each: starting one costs ~0.25 s of CPU on this 2-core machine (Node, koffi
// and the request code), which a burst of 100 requests would pay 100 times.
// A child whose request ran out of time is killed, never reused. Handing a
// request to an idle child costs little next to the helper's own start-up: an
// unprivileged helper's exec-to-exit median went 98/106 -> 75/102 ms (noise),
// `up` 50 -> 60-69 ms, on this machine under load 12 (README, broker section).
import { fork, type ChildProcess } from 'node:child_process';
import { fileURLToPath } from 'node:url';
import type { Handled } from './handle.js';
import type { RunnerAnswer, RunnerJob } from './runner-child.js';
import { closeFd } from '../sys/libc.js';
import { sendWithFds, socketPair } from '../sys/unix-fd.js';

const CHILD = fileURLToPath(new URL('./runner-child.js', import.meta.url));
const MSG_DONTWAIT = 0x40;
/** A child is retired after this many requests, so that whatever a request left behind in it does not pile up. */
const MAX_USES = 200;

interface Child {
  proc: ChildProcess;
  /** Our end of the socketpair the child reads each pidfd from (its fd 4). */
  fdChannel: number;
  ready: Promise<boolean>;
  /** Resolves once the process has exited and its IPC channel is closed (every message it sent has been seen). */
  gone: Promise<void>;
  uses: number;
}

export interface Run {
  /** What the request came to; rejects if the child died without answering. */
  result: Promise<Handled>;
  /** Resolves when the child is free again or gone: the request's slot is free only then. */
  freed: Promise<void>;
  /** SIGKILLs the child (time ran out). */
  kill(): void;
}

export class Runner {
  private idle: Child[] = [];
  private closed = false;
  private readonly all = new Set<Child>();

  /** `keepIdle`: children kept started and waiting (the first `keepIdle` requests of a burst wait for no start-up). */
  constructor(private readonly keepIdle: number, private readonly log: (line: string) => void) {
    this.fill();
  }

  private start(): Child {
    const [ours, theirs] = socketPair();
    let proc: ChildProcess;
    try {
      proc = fork(CHILD, [], { stdio: ['ignore', 'ignore', 'inherit', 'ipc', theirs], serialization: 'json' });
    } finally {
      closeFd(theirs);
    }
    const exited = new Promise<void>((resolve) => proc.once('exit', () => resolve()));
    const disconnected = new Promise<void>((resolve) => (proc.connected ? proc.once('disconnect', () => resolve()) : resolve()));
    const gone = Promise.all([exited, disconnected]).then(() => closeFd(ours));
    const ready = new Promise<boolean>((resolve) => {
      proc.once('message', (m: RunnerAnswer) => resolve('ready' in m));
      void gone.then(() => resolve(false));
    });
    const child: Child = { proc, fdChannel: ours, ready, gone, uses: 0 };
    this.all.add(child);
    void gone.then(() => {
      this.all.delete(child);
      if (this.idle.includes(child) && !this.closed) this.log(`broker: an idle request process exited (${proc.signalCode ?? `exit ${proc.exitCode}`})`);
      this.idle = this.idle.filter((c) => c !== child);
    });
    return child;
  }

  private fill(): void {
    while (!this.closed && this.idle.length < this.keepIdle) this.idle.push(this.start());
  }

  private release(child: Child): void {
    if (this.closed || child.uses >= MAX_USES || this.idle.length >= this.keepIdle + 8 || child.proc.exitCode !== null || child.proc.signalCode !== null) {
      child.proc.kill('SIGKILL');
      this.fill();
    } else this.idle.push(child);
  }

  /** Runs job in a child; the client's pidfd is passed to it (our copy stays ours to close). */
  run(job: RunnerJob, pidfd: number): Run {
    const child = this.idle.shift() ?? this.start();
    child.uses++;
    this.fill();
    const { proc } = child;
    let timedOut = false;
    const result = (async (): Promise<Handled> => {
      if (!(await child.ready)) throw new Error(`the request process exited before it was ready (${proc.signalCode ?? `exit ${proc.exitCode}`})`);
      const answered = new Promise<Handled>((resolve, reject) => {
        const onMessage = (m: RunnerAnswer): void => {
          if ('handled' in m) resolve(m.handled);
          else reject(new Error('the request process answered out of turn'));
        };
        proc.once('message', onMessage);
        void child.gone.then(() => {
          proc.off('message', onMessage);
          reject(new Error(`the request process ended without an answer (${proc.signalCode ?? `exit ${proc.exitCode}`})`));
        });
      });
      // Our own socketpair, one message per request, each read before the next is sent: this cannot block.
      sendWithFds(child.fdChannel, Buffer.from([1]), [pidfd], MSG_DONTWAIT);
      proc.send(job);
      return answered;
    })();
    const freed = result.then(() => { if (!timedOut) this.release(child); else return child.gone; }, () => child.gone.then(() => this.fill()));
    return {
      result,
      freed: freed.then(() => undefined, () => undefined),
      kill: () => {
        timedOut = true;
        if (proc.exitCode === null && proc.signalCode === null) proc.kill('SIGKILL');
      },
    };
  }

  /** Stops every child: idle ones and those still running a request. */
  close(): void {
    this.closed = true;
    for (const c of this.all) c.proc.kill('SIGKILL');
    this.idle = [];
  }
}
