// The policy path of the helper: profile and policy files (zod), candidate
// choice, every kernel implementation. Loaded only when the arguments need it,
// because zod and the rest cost tens of milliseconds QEMU would wait for.
import { hostContextFrom, type TransportName } from '../backends/types.js';
import { kernels, transports } from '../backends/registry.js';
import { sendHelperFd } from '../backends/transport/helper-fd.js';
import { UsageError } from '../errors.js';
import { realize, type Choice } from '../policy/choose.js';
import { configDir, loadPolicies, loadProfile } from '../policy/load.js';
import { buildRequest } from '../policy/request.js';
import { Rollback } from '../setup/rollback.js';
import { CAP_NET_ADMIN, hasCapability } from '../sys/caps.js';
import { c } from '../sys/libc.js';
import { sendWithFds } from '../sys/unix-fd.js';
import { aclPath, checkAccess } from './acl.js';
import type { HelperArgs } from './args.js';
import { checkHelperSocket } from './run.js';

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
  const policies = loadPolicies(config);
  const policy = policies.get(mode);
  if (!policy) throw new UsageError(`no policy defines mode '${mode}'`);
  const allowed = (a.socketpair !== undefined ? (a.protocols ?? profile?.protocols ?? PLAIN_PROTOCOLS) : PLAIN_PROTOCOLS) as TransportName[];
  const host = hostContextFrom(env, c.geteuid() === 0 || hasCapability(CAP_NET_ADMIN));
  const rb = new Rollback();
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
    for (const fd of new Set([...choice.endpoint.fds, ...choice.transport.fds])) c.close(fd);
    rb.commit();
    return { choice, reply };
  } catch (e) {
    rb.undoAllSync();
    throw e;
  }
}
