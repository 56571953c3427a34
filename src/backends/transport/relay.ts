// The socket transport's relay: a small detached process that moves frames
// between QEMU's datagram socket and an AF_PACKET socket on the veth end, and
// exits when QEMU does (a unix datagram socket gives no EOF, so it watches the
// owner's pid). It holds nothing QEMU waits for.
import { spawn } from 'node:child_process';
import { closeFd, readFd, writeFd } from '../../sys/libc.js';
import { unwatch, watchReadable } from '../../sys/poller.js';
import { binPath } from '../../paths.js';
import type { OwnerRef } from '../../state/owner.js';
import { waitForExit } from '../../state/owner-exit.js';

const MAX_FRAME = 65536;

/** Moves frames from `from` to `to` until `from` has nothing left; drops what `to` cannot take now. */
function pump(from: number, to: number, buf: Buffer): void {
  for (let i = 0; i < 256; i++) {
    const n = readFd(from, buf, MAX_FRAME);
    if (n <= 0) return;
    writeFd(to, buf, n);
  }
}

export async function runRelay(packetFd: number, dgramFd: number, owner: OwnerRef | null): Promise<void> {
  const a = Buffer.allocUnsafe(MAX_FRAME);
  const b = Buffer.allocUnsafe(MAX_FRAME);
  watchReadable(packetFd, () => pump(packetFd, dgramFd, a));
  watchReadable(dgramFd, () => pump(dgramFd, packetFd, b));
  if (owner) await waitForExit(owner);
  else await new Promise(() => undefined);
  unwatch(packetFd);
  unwatch(dgramFd);
  closeFd(packetFd);
  closeFd(dgramFd);
}

/** Starts the relay detached, handing it the two fds as its fds 3 and 4. */
export function spawnRelay(packetFd: number, dgramFd: number, owner: OwnerRef | null, env: NodeJS.ProcessEnv): number {
  const args = [binPath(), 'relay', ...(owner ? ['--owner-pid', String(owner.pid), '--owner-start', owner.startTime] : [])];
  const child = spawn(process.execPath, args, { detached: true, stdio: ['ignore', 'ignore', 'ignore', packetFd, dgramFd], env });
  child.unref();
  return child.pid ?? -1;
}
