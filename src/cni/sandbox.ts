// The sandbox as the runtime names it (CNI_NETNS): checked to be a network
// namespace before anything runs in it, with the spec's error codes.
import { statfsSync } from 'node:fs';
import { netnsExists } from '../net/netns-ip.js';
import { CniCode, CniError } from './errors.js';

/** statfs f_type of nsfs: what /run/netns/NAME bind mounts and /proc/PID/ns/net resolve to. */
const NSFS_MAGIC = 0x6e736673;

/** The spec's code 3 when the namespace path is not there; code 4 when it is not a namespace. */
export function requireNetns(path: string): void {
  if (!path.startsWith('/') || !netnsExists(path)) {
    throw new CniError(CniCode.UNKNOWN_CONTAINER, `network namespace '${path}' does not exist`, 'CNI_NETNS must be the path of the sandbox\'s network namespace, e.g. /run/netns/NAME');
  }
  let type = 0;
  try { type = Number(statfsSync(path).type); } catch { /* checked below */ }
  // Anything else would have us run `ip` in whatever namespace nsenter makes of it.
  if (type !== NSFS_MAGIC) throw new CniError(CniCode.INVALID_ENV, `CNI_NETNS '${path}' is not a network namespace`);
}
