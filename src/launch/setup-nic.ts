// One `run` NIC through the setup tier: the NIC spec maps to a SetupRequest,
// whose prepared endpoint holds its fds until QEMU inherits them.
import type { HostContext } from '../backends/types.js';
import { callerIsRoot, configPaths } from '../host/context.js';
import type { Choice } from '../policy/choose.js';
import { prepareEndpoint, type PreparedEndpoint } from '../setup/endpoint.js';
import { nicRequest } from '../setup/request.js';
import type { NicSpec } from './nic-spec.js';

/** Prepared, not handed on: committed once QEMU holds the fds, undone if anything fails before. */
export function setupNic(spec: NicSpec, host: HostContext, env: NodeJS.ProcessEnv): PreparedEndpoint {
  const { config } = configPaths(spec.args, env, callerIsRoot());
  return prepareEndpoint(nicRequest(spec), { host, config, admission: null });
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
