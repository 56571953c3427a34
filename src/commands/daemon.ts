import { Flags } from '@oclif/core';
import { QnhCommand } from '../cli/base.js';
import { fail } from '../cli/fail.js';
import { PermissionError, UsageError } from '../errors.js';
import { callerIsRoot, configPaths, DEFAULT_PATHS, processHost } from '../host/context.js';
import { startBroker } from '../broker/server.js';
import { checkLimits, DEFAULT_LIMITS, type BrokerLimits } from '../broker/limits.js';
import { parseAcl } from '../access/acl.js';
import { BrokerMetrics } from '../broker/metrics.js';
import { createLogger, LOG_LEVELS, type LogLevel } from '../log.js';
import { render } from '../metrics/exposition.js';
import { parseMetricsAddress, serveMetrics } from '../metrics/http.js';

const D = DEFAULT_LIMITS;
const bound = (summary: string, dflt: number): { summary: string; default: number; min: number } => ({ summary: `${summary} (default ${dflt})`, default: dflt, min: 1 });

export default class Daemon extends QnhCommand {
  static override summary = 'Run the broker: serve unprivileged helpers (QEMU, libvirt session mode) and up/down/list/gc for them, as root.';
  static override description = 'Listens on a unix socket (mode 0666; the ACL decides), or on the socket systemd passes (LISTEN_FDS). Logs one line per decision on stderr. Runs in the foreground until SIGTERM. Refuses to start (exit 8) without a readable, valid ACL.';
  static override examples = [
    '<%= config.bin %> daemon',
    '<%= config.bin %> daemon --socket /run/qnh.sock --acl /etc/qemu-net-helper/bridge.conf',
  ];
  static override flags = {
    socket: Flags.string({ summary: `socket path (default ${DEFAULT_PATHS.broker})`, default: DEFAULT_PATHS.broker }),
    acl: Flags.string({ summary: 'ACL file (default $QEMU_NET_HELPER_ACL or /etc/qemu-net-helper/bridge.conf)' }),
    config: Flags.string({ summary: 'configuration directory (default $QEMU_NET_HELPER_CONFIG or /etc/qemu-net-helper)' }),
    'max-connections': Flags.integer(bound('open connections in all; lowered to fit the fd limit', D.maxConnections)),
    'max-connections-per-user': Flags.integer(bound('open connections of one non-root uid', D.maxConnectionsPerUser)),
    'root-reserve': Flags.integer(bound('connections only root may use', D.rootReserveConnections)),
    'max-running': Flags.integer(bound('non-root requests running at once (one process each)', D.maxRunning)),
    'max-running-per-user': Flags.integer(bound('requests of one uid running at once; more wait in its own queue', D.maxRunningPerUser)),
    'max-endpoints': Flags.integer(bound('durable endpoints of non-root users in all', D.maxEndpoints)),
    'max-endpoints-per-user': Flags.integer(bound('durable endpoints of one non-root uid', D.maxEndpointsPerUser)),
    'spare-processes': Flags.integer({ summary: 'request processes kept started and idle, so that requests wait for no start-up (default 4)', default: 4, min: 0, max: 64 }),
    'request-timeout': Flags.integer(bound('seconds a request may take, waiting included, before its caller gets exit 10', D.requestTimeoutMs / 1000)),
    metrics: Flags.string({ summary: 'serve Prometheus metrics (GET /metrics) on this unix socket path or IP:PORT (e.g. 127.0.0.1:9468)' }),
    'log-level': Flags.string({ summary: 'least severe log lines printed: error, warn, info (default: every decision) or debug; journald priorities under systemd', options: [...LOG_LEVELS], default: 'info' }),
  };

  async run(): Promise<void> {
    const { flags } = await this.parse(Daemon);
    try {
      // pidfd_getfd needs ptrace rights over every client: only root has them.
      if (!callerIsRoot() || process.geteuid?.() !== 0) throw new PermissionError('the broker must run as root', 'start it from systemd (contrib/systemd) or as root');
      const host = processHost();
      const { acl, config } = configPaths({ acl: flags.acl, config: flags.config }, process.env, true);
      const limits: BrokerLimits = {
        maxConnections: flags['max-connections'],
        maxConnectionsPerUser: flags['max-connections-per-user'],
        rootReserveConnections: flags['root-reserve'],
        maxRunning: flags['max-running'],
        maxRunningPerUser: flags['max-running-per-user'],
        maxEndpoints: flags['max-endpoints'],
        maxEndpointsPerUser: flags['max-endpoints-per-user'],
        requestTimeoutMs: flags['request-timeout'] * 1000,
      };
      const bad = checkLimits(limits);
      if (bad) throw new UsageError(bad, "run 'qemu-net-helper daemon --help' for the bounds");
      if (flags.metrics) parseMetricsAddress(flags.metrics);
      // Usage first (exit 2), then the ACL: without a readable, valid one every
      // request would be refused, so refuse to start instead, saying how to make one.
      parseAcl(acl);
      const logger = createLogger({ level: flags['log-level'] as LogLevel });
      const log = (l: string): void => logger.info(l);
      const metrics = flags.metrics ? new BrokerMetrics() : undefined;
      // First: a --metrics it cannot serve stops the start before the broker listens.
      const endpoint = metrics ? await serveMetrics(flags.metrics!, () => render(metrics.families(host.stateDir)), (m) => logger.warn(`broker: ${m}`)) : null;
      const broker = await startBroker({ host, acl, config, socket: flags.socket, log, limits, spares: flags['spare-processes'], ...(metrics ? { metrics } : {}) }).catch(async (e: unknown) => {
        await endpoint?.close();
        throw e;
      });
      const l = broker.limits;
      log(`broker: listening on ${broker.where}; ACL ${acl}; configuration ${config}; state ${host.stateDir}${endpoint ? `; metrics on ${endpoint.where}` : ''}`);
      log(`broker: bounds: connections ${l.maxConnections} (${l.maxConnectionsPerUser} per user, ${l.rootReserveConnections} kept for root); running ${l.maxRunning} (${l.maxRunningPerUser} per user); endpoints ${l.maxEndpoints} (${l.maxEndpointsPerUser} per user); request timeout ${l.requestTimeoutMs / 1000} s`);
      const stop = (): void => { void Promise.all([broker.close(), endpoint?.close()]).then(() => process.exit(0)); };
      process.once('SIGTERM', stop);
      process.once('SIGINT', stop);
    } catch (e) {
      fail(this, e);
    }
  }
}
