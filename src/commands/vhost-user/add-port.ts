import { Args, Command, Flags } from '@oclif/core';
import { fail } from '../../cli/fail.js';
import { controlFlag, controlPath } from '../../cli/switch-control.js';
import { controlOk } from '../../vhost-user/control/client.js';

export default class AddPort extends Command {
  static override summary = 'Add a port to a running switch: a vhost-user socket at PATH (the switch listens there, or connects with --client).';
  static override enableJsonFlag = true;
  static override examples = ['<%= config.bin %> vhost-user add-port /run/vm3.sock --mode vepa'];
  static override args = { socket: Args.string({ description: 'unix socket path of the new port', required: true }) };
  static override flags = {
    control: controlFlag,
    mode: Flags.string({ summary: "port mode (default: the switch's --mode)", options: ['veb', 'vepa', 'private'] }),
    client: Flags.boolean({ summary: 'connect to a front-end listening at PATH (QEMU server=on) instead of listening' }),
  };

  async run(): Promise<unknown> {
    const { args, flags } = await this.parse(AddPort);
    try {
      const r = await controlOk(controlPath(flags.control), { op: 'add-port', socket: args.socket, client: flags.client, ...(flags.mode ? { mode: flags.mode } : {}) });
      if (!this.jsonEnabled()) this.log(`port ${String(r.port)}: ${args.socket}`);
      return { port: r.port, socket: r.socket };
    } catch (e) {
      fail(this, e);
    }
  }
}
