// The policy path of the helper: profile and policy files (zod), candidate
// choice, every kernel implementation. Loaded only when the arguments need it,
// because zod and the rest cost tens of milliseconds QEMU would wait for.
import type { HostContext, TransportName } from '../backends/types.js';
import { kernels, transports } from '../backends/registry.js';
import { sendHelperFd } from '../backends/transport/helper-fd.js';
import { UsageError } from '../errors.js';
import { closeChoiceFds, realize, type Choice } from '../policy/choose.js';
import { configDir, loadProfile, policyFor } from '../policy/load.js';
import { buildRequest } from '../policy/request.js';
import { c } from '../sys/libc.js';
import { peerCred, sendWithFds } from '../sys/unix-fd.js';
import { removeEndpoint, saveEndpoint, type EndpointRecord } from '../state/endpoints.js';
import { ownerOf, type OwnerRef } from '../state/owner.js';
import { completeRecord, draftRecord, journalingRollback } from '../lifecycle/record.js';
import { hostFromEnv } from '../lifecycle/up.js';
import { spawnWatcher } from '../lifecycle/watcher.js';
import { aclPath, checkAccess } from './acl.js';
import type { HelperArgs } from './args.js';
import { checkHelperSocket } from './run.js';

const F_SETFD = 2;
const FD_CLOEXEC = 1;

const PLAIN_PROTOCOLS: TransportName[] = ['tap', 'macvtap'];

export interface PolicyOutcome {
  choice: Choice;
  reply: Record<string, unknown>;
}

export function runPolicyHelper(a: HelperArgs, env: NodeJS.ProcessEnv = process.env, log: (line: string) => void = (l) => process.stderr.write(l + '\n')): PolicyOutcome {
  const sock = a.socketpair ?? a.fd;
  checkHelperSocket(sock);
  const config = configDir(a.config, env);
  const profileName = a.profile ?? (a.bridgeGiven ? a.bridge : undefined);
  const profile = profileName ? loadProfile(config, profileName) : null;
  if (a.profile && !profile) throw new UsageError(`no profile '${a.profile}' in ${config}/profiles`, 'create it or drop --profile');
  const { mode, req } = buildRequest(a, profile);
  // The ACL guards the names the caller chose: --br (bridge or profile name) and --dev.
  const acl = aclPath(a.acl, env);
  if (a.bridgeGiven || mode === 'bridge') checkAccess(acl, a.bridgeGiven ? a.bridge : req.dev ?? a.bridge);
  if (a.dev && a.dev !== a.bridge) checkAccess(acl, a.dev);
  const policy = policyFor(config, mode);
  const allowed = (a.socketpair !== undefined ? (a.protocols ?? profile?.protocols ?? PLAIN_PROTOCOLS) : PLAIN_PROTOCOLS) as TransportName[];
  const host = hostFromEnv(env);
  // The endpoint record is written only once something durable exists (a plain
  // tap dies with QEMU's fd and needs none), then updated at every step.
  const record = draftRecord(mode, peerOwner(sock));
  const rb = journalingRollback(record, host.stateDir);
  // Claims (SR-IOV VFs) are owned by QEMU, not by this short-lived helper.
  if (record.owner) req.params.ownerPid = record.owner.pid;
  req.params.endpointId = record.id;
  try {
    const choice = realize(mode, policy, req, host, { kernels, transports }, allowed, rb);
    if (a.explain) for (const e of choice.explain) log(`explain: ${e.kernel}/${e.transport}: ${e.decision}: ${e.reason}`);
    const reply = {
      version: 1,
      mode,
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
    if (a.socketpair !== undefined) {
      sendWithFds(sock, Buffer.from(JSON.stringify(reply) + '\n'), choice.transport.fds);
    } else {
      sendHelperFd(sock, choice.transport.fds[0]!);
    }
    // Objects that outlive QEMU's fd (macvtap, routes, NAT, VF claims) stay;
    // only our own fd references go.
    closeChoiceFds(choice);
    rb.commit();
    if (record.owned.length > 0) finishRecord(record, choice, host, sock, env);
    return { choice, reply };
  } catch (e) {
    const left = rb.undoAllSync();
    if (record.owned.length > 0 && left.length === 0) removeEndpoint(host.stateDir, record.id);
    throw e;
  }
}

/** QEMU (or libvirt) is the process at the other end of the socketpair it made. */
function peerOwner(sock: number): OwnerRef | null {
  try {
    return ownerOf(peerCred(sock).pid);
  } catch {
    return null;
  }
}

function finishRecord(record: EndpointRecord, choice: Choice, host: HostContext, sock: number, env: NodeJS.ProcessEnv): void {
  completeRecord(record, choice);
  saveEndpoint(host.stateDir, record);
  if (!record.owner) return;
  // QEMU's socket must not leak into the watcher (it is inherited, not close-on-exec).
  c.fcntl(sock, F_SETFD, FD_CLOEXEC);
  const pid = spawnWatcher(record.id, env);
  try {
    record.watcher = ownerOf(pid);
    saveEndpoint(host.stateDir, record);
  } catch { /* the watcher already finished: QEMU is gone */ }
}
