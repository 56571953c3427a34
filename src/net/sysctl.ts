// net.* sysctls through /proc/sys. /proc/sys/net follows the network
// namespace of the thread that opens the file (unlike /sys/class/net, which
// shows the namespace of whoever mounted sysfs), so a plain read or write here
// always acts on the namespace this process runs in.
import { readFileSync, writeFileSync } from 'node:fs';
import { NotFoundError, PermissionError, SetupError } from '../errors.js';

const PROC_SYS = '/proc/sys';

/** Path of net.ipv4.conf.<dev>.<key>; interface names may contain dots, which are fine in a path. */
export function ipv4ConfPath(dev: string, key: string): string {
  return `${PROC_SYS}/net/ipv4/conf/${dev}/${key}`;
}

export const IP_FORWARD = `${PROC_SYS}/net/ipv4/ip_forward`;

export function readSysctl(path: string): string {
  try {
    return readFileSync(path, 'latin1').trim();
  } catch (e) {
    const code = (e as NodeJS.ErrnoException).code;
    if (code === 'ENOENT') throw new NotFoundError(`${path} does not exist`, 'is IPv4 enabled in this network namespace and does the interface exist?');
    throw new SetupError(`reading ${path} failed: ${code ?? (e as Error).message}`);
  }
}

export function writeSysctl(path: string, value: string): void {
  try {
    writeFileSync(path, value, 'latin1');
  } catch (e) {
    const code = (e as NodeJS.ErrnoException).code;
    if (code === 'EACCES' || code === 'EPERM' || code === 'EROFS') {
      throw new PermissionError(`cannot write ${path} (${code})`, 'the helper needs CAP_NET_ADMIN and a writable /proc/sys (read-only in some containers)');
    }
    if (code === 'ENOENT') throw new NotFoundError(`${path} does not exist`, 'is IPv4 enabled in this network namespace and does the interface exist?');
    throw new SetupError(`writing ${value} to ${path} failed: ${code ?? (e as Error).message}`);
  }
}
