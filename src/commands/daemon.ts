import { Command, Flags } from '@oclif/core';
import { fail } from '../cli/fail.js';
import { PermissionError } from '../errors.js';
import { callerIsRoot, configPaths, DEFAULT_PATHS, processHost } from '../host/context.js';
import { startBroker } from '../broker/server.js';
import { BrokerMetrics } from '../broker/metrics.js';
import { createLogger, LOG_LEVELS, type LogLevel } from '../log.js';
import { render } from '../metrics/exposition.js';
import { serveMetrics } from '../metrics/http.js';

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
      const logger = createLogger({ level: flags['log-level'] as LogLevel });
      const log = (l: string): void => logger.info(l);
      const metrics = flags.metrics ? new BrokerMetrics() : undefined;
      // First: a --metrics it cannot serve stops the start before the broker listens.
      const endpoint = metrics ? await serveMetrics(flags.metrics!, () => render(metrics.families(host.stateDir)), (m) => logger.warn(`broker: ${m}`)) : null;
      const broker = await startBroker({ host, acl, config, socket: flags.socket, log, ...(metrics ? { metrics } : {}) }).catch(async (e: unknown) => {
        await endpoint?.close();
        throw e;
      });
      log(`broker: listening on ${broker.where}; ACL ${acl}; configuration ${config}; state ${host.stateDir}${endpoint ? `; metrics on ${endpoint.where}` : ''}`);
      const stop = (): void => { void Promise.all([broker.close(), endpoint?.close()]).then(() => process.exit(0)); };
      process.once('SIGTERM', stop);
      process.once('SIGINT', stop);
    } catch (e) {
      fail(this, e);
    }
  }
}
