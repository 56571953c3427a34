import { Flags } from '@oclif/core';
import { QnhCommand } from '../cli/base.js';
import { fail } from '../cli/fail.js';
import { PermissionError } from '../errors.js';
import { callerIsRoot, configPaths, DEFAULT_PATHS, processHost } from '../host/context.js';
import { startBroker } from '../broker/server.js';
import { parseAcl } from '../access/acl.js';

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
  };

  async run(): Promise<void> {
    const { flags } = await this.parse(Daemon);
    try {
      // pidfd_getfd needs ptrace rights over every client: only root has them.
      if (!callerIsRoot() || process.geteuid?.() !== 0) throw new PermissionError('the broker must run as root', 'start it from systemd (contrib/systemd) or as root');
      const host = processHost();
      const { acl, config } = configPaths({ acl: flags.acl, config: flags.config }, process.env, true);
      // Without a readable, valid ACL every request would be refused: refuse to start instead, saying how to make one.
      parseAcl(acl);
      const log = (l: string): void => { process.stderr.write(l + '\n'); };
      const broker = await startBroker({ host, acl, config, socket: flags.socket, log });
      log(`broker: listening on ${broker.where}; ACL ${acl}; configuration ${config}; state ${host.stateDir}`);
      const stop = (): void => { void broker.close().then(() => process.exit(0)); };
      process.once('SIGTERM', stop);
      process.once('SIGINT', stop);
    } catch (e) {
      fail(this, e);
    }
  }
}
