// Transport "tap/macvtap over the helper protocol": one sendmsg carrying the
// single byte 0x00 and exactly one SCM_RIGHTS fd. libvirt rejects anything
// else (no byte, more fds), and QEMU then calls TUNGETIFF on the fd.
import { BadFdError } from '../../errors.js';
import { SysError } from '../../sys/libc.js';
import { sendWithFds } from '../../sys/unix-fd.js';

const ONE_ZERO_BYTE = new Uint8Array([0]);

export function sendHelperFd(sock: number, fd: number): void {
  try {
    const n = sendWithFds(sock, ONE_ZERO_BYTE, [fd]);
    if (n !== 1) throw new BadFdError(`sending the tap fd on --fd=${sock} sent ${n} bytes instead of 1`);
  } catch (e) {
    if (e instanceof SysError) {
      throw new BadFdError(`sending the tap fd on --fd=${sock} failed: ${e.code}`, e.code === 'EPIPE' ? 'the peer (QEMU/libvirt) closed its end of the socket' : undefined);
    }
    throw e;
  }
}
