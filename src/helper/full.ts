// The policy path of the helper: profile and policy files (zod), candidate
// choice, every kernel implementation. Loaded only when the arguments need it
// (serve.ts decides), because zod and the rest cost tens of milliseconds QEMU
// would wait for; the broker reaches it the same way for its clients.
import type { TransportName } from '../backends/types.js';
import { sendHelperFd, sendOnHelperSocket } from '../backends/transport/helper-fd.js';
import type { Caller } from '../access/caller.js';
import { childEnv, type HostContext } from '../host/context.js';
import type { Choice } from '../policy/choose.js';
import type { ParsedMode } from '../policy/mode.js';
import { setupEndpoint, type SetupResult } from '../setup/endpoint.js';
import { helperRequest } from '../setup/request.js';
import { setCloseOnExec } from '../sys/libc.js';
import { peerCred } from '../sys/unix-fd.js';
import { saveEndpoint, type EndpointRecord } from '../state/endpoints.js';
import { ownerOf, type OwnerRef } from '../state/owner.js';
import { spawnWatcher } from '../lifecycle/watcher.js';
import type { HelperArgs } from './args.js';
import { checkHelperSocket, socketLabel } from './run.js';

const PLAIN_PROTOCOLS: TransportName[] = ['tap', 'macvtap'];

export interface PolicyOutcome extends SetupResult {
  reply: Record<string, unknown>;
}

/** Everything a helper request is served with: the direct helper's own, or the broker's for a client. */
export interface ServeContext {
  host: HostContext;
  acl: string;
  config: string;
  caller: Caller;
  /** Owner of claims when QEMU cannot be identified (the broker: itself). */
  fallbackOwnerPid?: number;
  log: (line: string) => void;
}

/** Serves one helper request on QEMU's socket `sock`: set up, send the fd (or the JSON reply and fds), commit. */
export function serveHelper(a: HelperArgs, sock: number, ctx: ServeContext): PolicyOutcome {
  const label = socketLabel(a);
  checkHelperSocket(sock, label);
  const extended = a.socketpair !== undefined;
  const protocols = (extended ? (a.protocols ?? PLAIN_PROTOCOLS) : PLAIN_PROTOCOLS) as TransportName[];
  let reply: Record<string, unknown> = {};
  const deliver = (choice: Choice, mode: ParsedMode): void => {
    if (a.explain) for (const e of choice.explain) ctx.log(`explain: ${e.kernel}/${e.transport}: ${e.decision}: ${e.reason}`);
    reply = {
      version: 1,
      mode: mode.name,
      kernel: choice.endpoint.kernel,
      protocol: choice.transport.transport,
      ifname: choice.endpoint.ifname,
      mac: choice.endpoint.mac ?? null,
      mtu: choice.endpoint.mtu,
      vnetHdrSize: choice.transport.vnetHdrSize,
      queues: choice.transport.queues,
      fds: choice.transport.fds.length,
      info: { ...choice.endpoint.info, ...choice.transport.info },
    };
    if (extended) sendOnHelperSocket(sock, Buffer.from(JSON.stringify(reply) + '\n'), choice.transport.fds, label);
    else sendHelperFd(sock, choice.transport.fds[0]!, label);
  };
  const r = setupEndpoint(helperRequest(a, protocols, peerOwner(sock), ctx.fallbackOwnerPid), {
    host: ctx.host, config: ctx.config, admission: { acl: ctx.acl, caller: ctx.caller },
  }, deliver);
  return { ...r, reply };
}

/** QEMU (or libvirt) is the process at the other end of the socketpair it made. */
export function peerOwner(sock: number): OwnerRef | null {
  try {
    const pid = peerCred(sock).pid;
    // pid 0: the peer lives in a pid namespace we cannot see into.
    return pid > 0 ? ownerOf(pid) : null;
  } catch {
    return null;
  }
}

/** The direct helper exits after serving: a watcher process releases what outlives QEMU's fd. */
export function startWatcher(record: EndpointRecord, host: HostContext, sock: number): void {
  // QEMU's socket must not leak into the watcher (it is inherited, not close-on-exec).
  setCloseOnExec(sock);
  const pid = spawnWatcher(record.id, childEnv(host));
  try {
    record.watcher = ownerOf(pid);
    saveEndpoint(host.stateDir, record);
  } catch { /* the watcher already finished: QEMU is gone */ }
}
