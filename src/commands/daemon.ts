import { Command, Flags } from '@oclif/core';
import { fail } from '../cli/fail.js';
import { PermissionError, UsageError } from '../errors.js';
import { callerIsRoot, configPaths, DEFAULT_PATHS, processHost } from '../host/context.js';
import { startBroker } from '../broker/server.js';
import { checkLimits, DEFAULT_LIMITS, type BrokerLimits } from '../broker/limits.js';

const D = DEFAULT_LIMITS;
const bound = (summary: string, dflt: number): { summary: string; default: number; min: number } => ({ summary: `${summary} (default ${dflt})`, default: dflt, min: 1 });

export default class Daemon extends Command {
  static override summary = 'Run the broker: serve unprivileged helpers (QEMU, libvirt session mode) and up/down/list/gc for them, as root.';
  static override description = 'Listens on a unix socket (mode 0666; the ACL decides), or on the socket systemd passes (LISTEN_FDS). Logs one line per decision on stderr. Runs in the foreground until SIGTERM.';
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
  };

  async run(): Promise<void> {
    const { flags } = await this.parse(Daemon);
    try {
      // pidfd_getfd needs ptrace rights over every client: only root has them.
      if (!callerIsRoot() || process.geteuid?.() !== 0) throw new PermissionError('the broker must run as root', 'start it from systemd (contrib/systemd) or as root');
      const host = processHost();
      const { acl, config } = configPaths({ acl: flags.acl, config: flags.config }, process.env, true);
      const log = (l: string): void => { process.stderr.write(l + '\n'); };
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
      const broker = await startBroker({ host, acl, config, socket: flags.socket, log, limits, spares: flags['spare-processes'] });
      const l = broker.limits;
      log(`broker: listening on ${broker.where}; ACL ${acl}; configuration ${config}; state ${host.stateDir}`);
      log(`broker: bounds: connections ${l.maxConnections} (${l.maxConnectionsPerUser} per user, ${l.rootReserveConnections} kept for root); running ${l.maxRunning} (${l.maxRunningPerUser} per user); endpoints ${l.maxEndpoints} (${l.maxEndpointsPerUser} per user); request timeout ${l.requestTimeoutMs / 1000} s`);
      const stop = (): void => { void broker.close().then(() => process.exit(0)); };
      process.once('SIGTERM', stop);
      process.once('SIGINT', stop);
    } catch (e) {
      fail(this, e);
    }
  }
}
