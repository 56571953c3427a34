// The watcher: a small detached process started by the helper when an
// endpoint has pieces that do not die with QEMU's fd. It holds nothing QEMU
// waits for (no socket, no stdio), waits for QEMU to exit, releases the
// endpoint and exits. If the watcher itself is killed, `gc` is the safety net.
import { spawn } from 'node:child_process';
import { koffi } from '../sys/libc.js';
import { watchReadable, unwatch } from '../sys/poller.js';
import { c } from '../sys/libc.js';
import { binPath } from '../paths.js';
import { ownerStatus, type OwnerRef } from '../state/owner.js';

const SYS_pidfd_open = 434;

/** Resolves when the process exits: pidfd when the kernel has it (5.3+), else polling /proc. */
export function waitForExit(owner: OwnerRef, pollMs = 500): Promise<void> {
  return new Promise((resolve) => {
    if (ownerStatus(owner) === 'gone') return resolve();
    let pidfd = -1;
    try {
      const lib = koffi.load('libc.so.6');
      const syscall = lib.func('long syscall(long nr, int pid, unsigned int flags)');
      pidfd = Number(syscall(SYS_pidfd_open, owner.pid, 0));
    } catch { pidfd = -1; }
    // The pid could have been reused between the check and pidfd_open.
    if (pidfd >= 0 && ownerStatus(owner) === 'gone') {
      c.close(pidfd);
      return resolve();
    }
    if (pidfd >= 0 && watchReadable(pidfd, () => { unwatch(pidfd); c.close(pidfd); resolve(); })) return;
    const t = setInterval(() => {
      if (ownerStatus(owner) === 'gone') {
        clearInterval(t);
        resolve();
      }
    }, pollMs);
  });
}

/** Starts `qemu-net-helper watch --id ID` detached, with no inherited fds but stdio to /dev/null. */
export function spawnWatcher(id: string, env: NodeJS.ProcessEnv): number {
  const child = spawn(process.execPath, [binPath(), 'watch', '--id', id], {
    detached: true,
    stdio: 'ignore',
    env,
  });
  child.unref();
  return child.pid ?? -1;
}
