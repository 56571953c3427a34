// Kernel implementation "bridge + tap": what qemu-bridge-helper does, plus
// rollback and precise errors. Synchronous on purpose: it runs in the helper's
// fast path, where every step is one ioctl.
import { NotFoundError, PermissionError, SetupError, UnsupportedError } from '../../errors.js';
import { SysError } from '../../sys/libc.js';
import { bridgeAddPort, getMac, getMtu, ifIndex, setMac, setMtu, setUp } from '../../sys/netdev.js';
import { closeFd } from '../../sys/libc.js';
import { createTap, DEFAULT_TUN_DEVICE, setPersist, type Tap } from '../../sys/tun.js';
import type { Rollback } from '../../state/rollback.js';
import type { OwnedObject } from '../types.js';

export interface BridgeTapRequest {
  bridge: string;
  vnetHdr: boolean;
  tunDevice?: string;
  /** Tap name or pattern; default tap%d like qemu-bridge-helper. */
  tapName?: string;
  /** More than 1: an IFF_MULTI_QUEUE tap with one fd per queue (QEMU's fds=a:b:...). */
  queues?: number;
  /**
   * Persistent tap (see EndpointRequest.persist): marked with `marker`,
   * journaled as owned by `backend`, released with `release` on rollback.
   * klink.ts's markLink and releaseLink are passed in rather than imported so
   * the helper's fast path (non-persistent taps) never loads child_process (~4 ms).
   */
  persist?: {
    backend: string;
    marker: string;
    mark: (ifname: string, marker: string) => void;
    release: (obj: OwnedObject) => unknown;
  };
}

export interface TapEndpoint {
  tap: Tap;
  /** One fd per queue; [tap.fd] for a single-queue tap. */
  queueFds: number[];
  bridge: string;
  mtu: number;
  mac: Buffer;
  /** The persistent tap as journaled ({kind: 'link', data: {ifname, ifindex, marker}}). */
  owned?: OwnedObject;
}

/** Maps a failed tun open/ioctl to what the user must fix. */
export function tunError(e: unknown, tunDevice: string): never {
  if (e instanceof SysError) {
    if (e.syscall === 'open' && (e.code === 'ENOENT' || e.code === 'ENODEV' || e.code === 'ENXIO')) {
      throw new UnsupportedError(`cannot open ${tunDevice}: ${e.code}`, "load the tun module ('modprobe tun') or create the device node");
    }
    if (e.code === 'EPERM' || e.code === 'EACCES') {
      throw new PermissionError(`no permission to create a tap through ${tunDevice} (${e.code})`, 'the helper needs CAP_NET_ADMIN: run it as root or give it that capability');
    }
    throw new SetupError(`creating a tap failed: ${e.message}`);
  }
  throw e;
}

export function setupBridgeTap(req: BridgeTapRequest, rb: Rollback): TapEndpoint {
  const tunDevice = req.tunDevice ?? DEFAULT_TUN_DEVICE;
  const queues = Math.max(1, req.queues ?? 1);
  if (ifIndex(req.bridge) === 0) {
    throw new NotFoundError(`bridge '${req.bridge}' does not exist in this network namespace`, `create it ('ip link add ${req.bridge} type bridge') or pass another --br`);
  }
  let tap: Tap;
  try {
    tap = createTap({ vnetHdr: req.vnetHdr, tunDevice, ...(req.tapName ? { name: req.tapName } : {}), ...(queues > 1 ? { multiQueue: true } : {}) });
  } catch (e) {
    tunError(e, tunDevice);
  }
  // Non-persistent: closing our fd destroys the tap (QEMU's dup keeps it alive once sent).
  rb.add(`close tap ${tap.name}`, () => closeFd(tap.fd));
  let owned: OwnedObject | undefined;
  const queueFds = [tap.fd];
  // Further queues: the same name and flags again attach a new queue to that tap.
  for (let q = 1; q < queues; q++) {
    let more: Tap;
    try {
      more = createTap({ vnetHdr: req.vnetHdr, tunDevice, name: tap.name, multiQueue: true });
    } catch (e) {
      tunError(e, tunDevice);
    }
    rb.add(`close queue ${q} of tap ${tap.name}`, () => closeFd(more.fd));
    queueFds.push(more.fd);
  }
  if (req.persist) {
    // Marked and journaled while the tap still dies with our fd, made
    // persistent last: a crash anywhere in between leaks nothing, and what
    // the journal names carries our marker.
    const p = req.persist;
    p.mark(tap.name, p.marker);
    const obj: OwnedObject = { kind: 'link', data: { ifname: tap.name, ifindex: ifIndex(tap.name), marker: p.marker } };
    rb.add(`delete tap ${tap.name}`, () => { p.release(obj); }, { backend: p.backend, obj });
    owned = obj;
    setPersist(tap.fd, true);
  }
  try {
    const mtu = getMtu(req.bridge);
    setMtu(tap.name, mtu);
    // 0xFE as first byte keeps the tap's address above any guest's, so the
    // bridge (which takes the lowest port address) never changes its MAC.
    const mac = getMac(tap.name);
    mac[0] = 0xfe;
    setMac(tap.name, mac);
    try {
      bridgeAddPort(req.bridge, tap.name);
    } catch (e) {
      if (e instanceof SysError && (e.code === 'EOPNOTSUPP' || e.code === 'EINVAL')) {
        throw new NotFoundError(`'${req.bridge}' is not a bridge (the kernel refused to attach ${tap.name} to it: ${e.code})`, 'pass the name of a Linux bridge with --br');
      }
      throw e;
    }
    setUp(tap.name);
    return { tap, queueFds, bridge: req.bridge, mtu, mac, ...(owned ? { owned } : {}) };
  } catch (e) {
    if (e instanceof SysError) {
      if (e.code === 'EPERM') throw new PermissionError(`no permission: ${e.message}`, 'the helper needs CAP_NET_ADMIN');
      throw new SetupError(`setting up ${tap.name} on bridge '${req.bridge}' failed: ${e.message}`);
    }
    throw e;
  }
}
