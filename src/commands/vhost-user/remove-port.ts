import { Args, Command } from '@oclif/core';
import { fail } from '../../cli/fail.js';
import { controlFlag, controlPath, readSwitch } from '../../cli/switch-control.js';
import { NotFoundError } from '../../errors.js';
import { controlOk } from '../../vhost-user/control/client.js';

export default class RemovePort extends Command {
  static override summary = 'Remove a port from a running switch, by number or socket path (its front-end is disconnected, its socket removed).';
  static override enableJsonFlag = true;
  static override examples = ['<%= config.bin %> vhost-user remove-port 2', '<%= config.bin %> vhost-user remove-port /run/vm3.sock'];
  static override args = { port: Args.string({ description: 'port number or socket path', required: true }) };
  static override flags = { control: controlFlag };

  async run(): Promise<unknown> {
    const { args, flags } = await this.parse(RemovePort);
    try {
      const path = controlPath(flags.control);
      const byNumber = /^\d+$/.test(args.port);
      // Checked first so a missing port is "not found" (exit 5), not a refusal.
      const v = await readSwitch(path);
      if (!v.ports.some((p) => (byNumber ? p.port === Number(args.port) : p.socket === args.port))) {
        throw new NotFoundError(`the switch at ${path} has no port ${args.port}`, "'qemu-net-helper vhost-user ports' lists them");
      }
      const r = await controlOk(path, byNumber ? { op: 'remove-port', port: Number(args.port) } : { op: 'remove-port', socket: args.port });
      if (!this.jsonEnabled()) this.log(`removed port ${String(r.port)}: ${String(r.socket)}`);
      return { port: r.port, socket: r.socket };
    } catch (e) {
      fail(this, e);
    }
  }
}
