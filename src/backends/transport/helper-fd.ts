// Transport "tap/macvtap over the helper protocol": one sendmsg carrying the
// single byte 0x00 and exactly one SCM_RIGHTS fd. libvirt rejects anything
// else (no byte, more fds), and QEMU then calls TUNGETIFF on the fd.
import { BadFdError } from '../../errors.js';
import { SysError } from '../../sys/libc.js';
import { sendAllWithFds, SendTimeoutError } from '../../sys/unix-fd.js';

const ONE_ZERO_BYTE = new Uint8Array([0]);

/** QEMU reads its helper's socket as soon as the helper runs: a socket still full after this is not QEMU waiting for us. */
const FD_SEND_TIMEOUT_MS = 5_000;

/**
 * Sends `data` and `fds` on QEMU's socket `sock`, never blocking longer than
 * FD_SEND_TIMEOUT_MS whatever the socket's mode. `label` is the socket as the
 * caller named it (--fd=N of the caller's process, not our copy's number).
 */
export function sendOnHelperSocket(sock: number, data: Uint8Array, fds: readonly number[], label: string, timeoutMs = FD_SEND_TIMEOUT_MS): void {
  try {
    sendAllWithFds(sock, data, fds, timeoutMs);
  } catch (e) {
    if (e instanceof SendTimeoutError) {
      throw new BadFdError(`sending the fd on ${label} failed: ${e.message}`, 'the socket must be the one QEMU or libvirt gave the helper, with QEMU reading it');
    }
    if (e instanceof SysError) {
      throw new BadFdError(`sending the fd on ${label} failed: ${e.code}`, e.code === 'EPIPE' ? 'the peer (QEMU/libvirt) closed its end of the socket' : undefined);
    }
    throw e;
  }
}

export function sendHelperFd(sock: number, fd: number, label = `--fd=${sock}`): void {
  sendOnHelperSocket(sock, ONE_ZERO_BYTE, [fd], label);
}
