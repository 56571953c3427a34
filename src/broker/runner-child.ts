// A request process of the broker (see runner.ts): loads the request code,
// says "ready", then for each job on the IPC channel takes the client's pidfd
// from fd 4, runs the request synchronously (ip, nft, ioctls, blocking where
// they must), closes the pidfd and answers with what handle() returned.
import { Caller } from '../access/caller.js';
import { describeError } from '../errors.js';
import { closeFd, waitReadableSync } from '../sys/libc.js';
import { recvWithFds } from '../sys/unix-fd.js';
import { handle, type BrokerConfig, type Handled } from './handle.js';
import type { BrokerRequest } from './protocol.js';

/** The job the broker sends; the pidfd travels beside it on fd 4. */
export interface RunnerJob {
  req: BrokerRequest;
  caller: { uid: number; gid: number; groups: number[]; pid: number };
  cfg: BrokerConfig;
}

export type RunnerAnswer = { ready: true } | { handled: Handled };

const FD_CHANNEL = 4;

function takePidfd(): number {
  if (!waitReadableSync(FD_CHANNEL, 10_000)) throw new Error('no pidfd from the broker');
  const r = recvWithFds(FD_CHANNEL, Buffer.alloc(8));
  if (r.fds.length !== 1) throw new Error(`expected one pidfd from the broker, got ${r.fds.length}`);
  return r.fds[0]!;
}

function answer(a: RunnerAnswer): Promise<void> {
  return new Promise((resolve) => process.send!(a, undefined, undefined, () => resolve()));
}

process.on('message', (job: RunnerJob) => {
  let handled: Handled;
  let pidfd = -1;
  try {
    pidfd = takePidfd();
    const c = job.caller;
    handled = handle(job.req, new Caller(c.uid, c.gid, c.groups, c.pid), pidfd, job.cfg);
  } catch (e) {
    const { exitCode, line } = describeError(e);
    handled = { reply: { v: 1, ok: false, exit: exitCode, error: line }, what: job.req.op, verdict: `failed: ${line}` };
  } finally {
    closeFd(pidfd);
  }
  void answer({ handled });
});
// The broker gone (crashed or stopped): nothing more will come.
process.on('disconnect', () => process.exit(0));
void answer({ ready: true });
