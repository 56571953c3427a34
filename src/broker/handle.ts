// What the broker does for one request, on behalf of a caller it treats as
// hostile: the caller's flags choose a mode, a bridge, a device — all checked
// against the broker's ACL — and never a file, a device path or a program.
// The host context, ACL and configuration are the broker's own.
import type { Caller } from '../access/caller.js';
import { AccessDeniedError, BadFdError, describeError, ExitCode, UsageError } from '../errors.js';
import { parseHelperArgs } from '../helper/args.js';
import { checkHelperSocket, socketLabel } from '../helper/run.js';
import * as fullHelper from '../helper/full.js';
import { serveHelperRequest } from '../helper/serve.js';
import { pathsChosen, type HostContext } from '../host/context.js';
import { gcAll } from '../lifecycle/gc.js';
import { takeDown } from '../lifecycle/release.js';
import { listFor, visibleTo } from '../lifecycle/list.js';
import { up } from '../setup/up.js';
import { closeFd, SysError } from '../sys/libc.js';
import { pidfdGetfd } from '../sys/pidfd.js';
import { peerCred } from '../sys/unix-fd.js';
import { validEndpointId } from '../state/endpoints.js';
import { checkTakeable } from './target-check.js';
import type { BrokerReply, BrokerRequest } from './protocol.js';

export interface BrokerConfig {
  host: HostContext;
  acl: string;
  config: string;
  /** The broker's own pid (requests run in a child of it): owner of claims when QEMU cannot be identified. */
  brokerPid?: number;
}

export interface Handled {
  reply: BrokerReply;
  /** For the log: what was asked and what came of it. */
  what: string;
  verdict: string;
  /** An endpoint the broker must now watch (its owner's exit ends it). */
  watch?: string;
}

function helper(req: Extract<BrokerRequest, { op: 'helper' }>, caller: Caller, pidfd: number, cfg: BrokerConfig): Handled {
  const a = parseHelperArgs(req.argv);
  const what = `helper ${req.argv.join(' ')}`;
  if (a.help) return { reply: { v: 1, ok: true, exit: 0 }, what, verdict: 'help' };
  const clientFd = a.socketpair ?? a.fd;
  const label = socketLabel(a);
  // Checked before taking anything: root's pidfd_getfd would take an fd out
  // of any process, a setuid one the caller forked into included.
  checkTakeable(pidfd, clientFd, caller, label);
  let sock: number;
  try {
    sock = pidfdGetfd(pidfd, clientFd);
  } catch (e) {
    throw new BadFdError(`${label}: the broker cannot take it from the helper (${e instanceof SysError ? e.code : String(e)})`, 'the helper must be run by QEMU or libvirt, which pass one end of a socketpair');
  }
  try {
    // Again after taking it: the process may have exec'd a setuid program in
    // between. Then the fd is closed unused (it is a socket: closing one
    // cannot wait on anybody).
    checkHelperSocket(sock, label);
    checkTakeable(pidfd, clientFd, caller, label);
    // QEMU runs as the user whose helper this is; a socket whose other end is
    // someone else's process would hand that process our fd.
    let peerUid: number | null = null;
    try { peerUid = peerCred(sock).uid; } catch { /* checked by serveHelperRequest */ }
    if (peerUid !== null && !caller.isRoot && peerUid !== caller.uid) {
      throw new AccessDeniedError(`access denied: the socket passed with ${label} leads to a process of uid ${peerUid}, not to the caller's QEMU`, 'pass the socket QEMU or libvirt gave the helper');
    }
    const paths = pathsChosen(a, cfg, caller.isRoot);
    const lines: string[] = [];
    const served = serveHelperRequest(a, sock, {
      host: () => cfg.host, acl: paths.acl, config: paths.config, caller, fallbackOwnerPid: cfg.brokerPid ?? process.pid, log: (l) => lines.push(l), leaveWatcher: false,
    }, () => fullHelper);
    if (served.path === 'bridge') return { reply: { v: 1, ok: true, exit: 0 }, what, verdict: `allowed: bridge bridge/tap ${served.tap.tapName}` };
    const r = served.outcome;
    const verdict = `allowed: ${r.mode.name} ${r.choice.endpoint.kernel}/${r.choice.transport.transport} ${r.choice.endpoint.ifname}${r.durable ? ` (endpoint ${r.record.id})` : ''}`;
    return { reply: { v: 1, ok: true, exit: 0, ...(lines.length ? { lines } : {}) }, what, verdict, ...(r.durable ? { watch: r.record.id } : {}) };
  } finally {
    closeFd(sock);
  }
}

export function handle(req: BrokerRequest, caller: Caller, pidfd: number, cfg: BrokerConfig): Handled {
  try {
    switch (req.op) {
      case 'helper':
        return helper(req, caller, pidfd, cfg);
      case 'up': {
        const o = req.options;
        const { config } = pathsChosen({}, cfg, caller.isRoot);
        const r = up(o, { host: cfg.host, acl: caller.isRoot ? null : cfg.acl, config, caller });
        return { reply: { v: 1, ok: true, exit: 0, result: r }, what: `up ${JSON.stringify(o)}`, verdict: `allowed: endpoint ${r.endpoint.id} ${r.endpoint.ifname}` };
      }
      case 'down': {
        if (!validEndpointId(req.id)) throw new UsageError(`malformed endpoint id ${JSON.stringify(req.id.slice(0, 64))}`, "ids are letters, digits, '_', '.' and '-' (see 'qemu-net-helper list')");
        const r = takeDown(req.id, cfg.host, caller);
        const exit = r.failed.length ? ExitCode.SETUP_FAILED : 0;
        const reply: BrokerReply = exit === 0
          ? { v: 1, ok: true, exit: 0, result: r }
          : { v: 1, ok: false, exit, error: `could not release ${r.failed.join('; ')}` };
        return { reply, what: `down ${req.id}`, verdict: r.alreadyGone ? 'already gone' : exit ? 'failed' : 'released' };
      }
      case 'list': {
        const result = listFor(cfg.host.stateDir, caller);
        return { reply: { v: 1, ok: true, exit: 0, result }, what: 'list', verdict: `${result.endpoints.length} endpoints` };
      }
      case 'gc': {
        const r = gcAll(cfg.host, caller.isRoot ? undefined : (rec) => visibleTo(caller, rec));
        return { reply: { v: 1, ok: true, exit: 0, result: r }, what: 'gc', verdict: `released ${r.endpoints.released.length}` };
      }
    }
  } catch (e) {
    const { exitCode, line } = describeError(e);
    return { reply: { v: 1, ok: false, exit: exitCode, error: line }, what: req.op === 'helper' ? `helper ${req.argv.join(' ')}` : req.op, verdict: `refused (exit ${exitCode}): ${line}` };
  }
}
