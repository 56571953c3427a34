import { Args, Command } from '@oclif/core';
import { fail } from '../../cli/fail.js';
import { controlFlag, controlPath, readSwitch } from '../../cli/switch-control.js';
import { NotFoundError, UsageError } from '../../errors.js';
import { controlOk } from '../../vhost-user/control/client.js';

export default class SetMode extends Command {
  static override summary = "Change a port's mode on a running switch: veb, vepa or private.";
  static override enableJsonFlag = true;
  static override examples = ['<%= config.bin %> vhost-user set-mode 1 private'];
  static override args = {
    port: Args.string({ description: 'port number', required: true }),
    mode: Args.string({ description: 'veb, vepa or private', required: true, options: ['veb', 'vepa', 'private'] }),
  };
  static override flags = { control: controlFlag };

  async run(): Promise<unknown> {
    const { args, flags } = await this.parse(SetMode);
    try {
      if (!/^\d+$/.test(args.port)) throw new UsageError(`port '${args.port}' is not a port number`, "'qemu-net-helper vhost-user ports' lists them");
      const path = controlPath(flags.control);
      const v = await readSwitch(path);
      if (!v.ports.some((p) => p.port === Number(args.port))) throw new NotFoundError(`the switch at ${path} has no port ${args.port}`, "'qemu-net-helper vhost-user ports' lists them");
      const r = await controlOk(path, { op: 'set-mode', port: Number(args.port), mode: args.mode });
      if (!this.jsonEnabled()) this.log(`port ${String(r.port)}: mode ${String(r.mode)}`);
      return { port: r.port, mode: r.mode };
    } catch (e) {
      fail(this, e);
    }
  }
}
