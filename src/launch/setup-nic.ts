// One `run` NIC from the policy machinery: the same request building, policy
// lookup and candidate choice as the helper's policy path, with the transports
// `run` can hand over by inheritance (tap, macvtap, vhost-kernel).
import { kernels, transports } from '../backends/registry.js';
import type { HostContext, TransportName } from '../backends/types.js';
import { ConfigError } from '../errors.js';
import { realize, type Choice } from '../policy/choose.js';
import { loadProfile, policyFor } from '../policy/load.js';
import { callerIsRoot, configPaths } from '../host/context.js';
import { buildRequest } from '../policy/request.js';
import type { Rollback } from '../setup/rollback.js';
import { selfOwner } from '../state/owner.js';
import { removeEndpoint, type EndpointRecord } from '../state/endpoints.js';
import { draftRecord, journalingRollback } from '../lifecycle/record.js';
import type { NicSpec } from './nic-spec.js';

export interface NicSetup {
  spec: NicSpec;
  choice: Choice;
  /** Undoes everything made for this NIC until QEMU holds the fds. */
  rb: Rollback;
  /** Journal of what outlives the fds (macvtap links, ...); saved only when there is any. */
  record: EndpointRecord;
}

function transportsFor(spec: NicSpec): TransportName[] {
  if (spec.vhost === 'user') return ['vhost-user'];
  if (spec.vhost === 'on') return ['vhost-kernel'];
  if (spec.vhost === 'off') return ['tap', 'macvtap'];
  return ['vhost-kernel', 'tap', 'macvtap'];
}

export function setupNic(spec: NicSpec, host: HostContext, env: NodeJS.ProcessEnv): NicSetup {
  const { config } = configPaths(spec.args, env, callerIsRoot());
  const profile = spec.args.profile ? loadProfile(config, spec.args.profile) : null;
  if (spec.args.profile && !profile) throw new ConfigError(`--nic '${spec.text}': no profile '${spec.args.profile}' in ${config}/profiles`, 'create it or drop profile=');
  const { mode, req } = buildRequest(spec.args, profile);
  const policy = policyFor(config, mode);
  // `run` waits for QEMU and releases everything itself; until QEMU runs, the
  // record's owner is this process, so gc cleans up if we are killed first.
  const record = draftRecord(mode, selfOwner());
  const rb = journalingRollback(record, host.stateDir);
  req.params.ownerPid = process.pid;
  req.params.endpointId = record.id;
  try {
    const choice = realize(mode, policy, req, host, { kernels, transports }, transportsFor(spec), rb);
    return { spec, choice, rb, record };
  } catch (e) {
    // A candidate that failed half-way was undone by realize; this catches the rest.
    const left = rb.undoAllSync();
    if (left.length === 0) removeEndpoint(host.stateDir, record.id);
    throw e;
  }
}

/** Splits a transport's fds into queue fds and vhost-net fds (vhost-kernel sends queues first). */
export function splitFds(choice: Choice): { queueFds: number[]; vhostFds: number[] } {
  const fds = choice.transport.fds;
  if (choice.transport.transport === 'vhost-kernel') {
    const q = choice.transport.queues;
    return { queueFds: fds.slice(0, q), vhostFds: fds.slice(q, 2 * q) };
  }
  return { queueFds: fds.slice(), vhostFds: [] };
}
