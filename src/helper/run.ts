// The helper protocol end to end: check the socket, the ACL and permissions,
// make the endpoint, send exactly one byte 0x00 with one fd, and leave.
import { BadFdError, PermissionError } from '../errors.js';
import { setupBridgeTap } from '../backends/kernel/bridge-tap.js';
import { sendHelperFd } from '../backends/transport/helper-fd.js';
import type { Caller } from '../access/caller.js';
import { checkAccess } from '../access/acl.js';
import { hasNetAdmin } from '../host/context.js';
import { Rollback } from '../state/rollback.js';
import { SysError } from '../sys/libc.js';
import { SOCK_STREAM, socketType } from '../sys/unix-fd.js';
import type { HelperArgs } from './args.js';

export interface HelperResult {
  tapName: string;
  bridge: string;
  mtu: number;
  vnetHdr: boolean;
}

/**
 * The fd QEMU/libvirt gave us must be a connected unix stream socket. Asked
 * with getsockopt only, never fstat: the fd is the caller's choice, and an
 * fstat of a file on a stalled FUSE mount never returns. `label` names the fd
 * as the caller knows it (the broker's copy has another number).
 */
export function checkHelperSocket(fd: number, label = `--fd=${fd}`): void {
  const hint = 'the helper must be run by QEMU or libvirt, which pass one end of a socketpair';
  let type: number;
  try {
    type = socketType(fd);
  } catch (e) {
    const code = e instanceof SysError ? e.code : String(e);
    if (code === 'EBADF') throw new BadFdError(`${label} is not an open file descriptor`, hint);
    if (code === 'ENOTSOCK') throw new BadFdError(`${label} is not a socket`, hint);
    throw new BadFdError(`${label}: cannot query the socket (${code})`);
  }
  if (type !== SOCK_STREAM) throw new BadFdError(`${label} is a socket of type ${type}, not a unix stream socket`);
}

/** How the caller named QEMU's socket: the fd number in its own process. */
export function socketLabel(args: Pick<HelperArgs, 'fd' | 'socketpair'>): string {
  return args.socketpair !== undefined ? `--socketpair=${args.socketpair}` : `--fd=${args.fd}`;
}

/** What the plain bridge path needs, from the helper itself or from the broker for its client. */
export interface BridgeServeContext {
  acl: string;
  caller: Caller;
  tunDevice: () => string;
  /** Checked after the ACL (the helper run directly must hold CAP_NET_ADMIN). */
  requirePrivilege?: () => void;
}

/** qemu-bridge-helper's job: ACL, a tap on the bridge, one byte and one fd on QEMU's socket `sock`. */
export function serveBridgeTap(args: HelperArgs, sock: number, ctx: BridgeServeContext): HelperResult {
  const label = socketLabel(args);
  checkHelperSocket(sock, label);
  checkAccess(ctx.acl, args.bridge, ctx.caller);
  ctx.requirePrivilege?.();
  const rb = new Rollback();
  try {
    const ep = setupBridgeTap({ bridge: args.bridge, vnetHdr: args.useVnet, tunDevice: ctx.tunDevice() }, rb);
    sendHelperFd(sock, ep.tap.fd, label);
    // QEMU holds its own reference now; ours goes, and the tap lives as long as QEMU's.
    rb.undoAllSync();
    return { tapName: ep.tap.name, bridge: ep.bridge, mtu: ep.mtu, vnetHdr: ep.tap.vnetHdr };
  } catch (e) {
    rb.undoAllSync();
    throw e;
  }
}

/** The direct helper's plain-path privilege: without CAP_NET_ADMIN no tap can be made. */
export function requireNetAdmin(): void {
  if (!hasNetAdmin()) {
    throw new PermissionError('no permission: the helper needs CAP_NET_ADMIN to create a tap and attach it to a bridge', 'run QEMU/libvirt with that capability for the helper, or run it as root');
  }
}
