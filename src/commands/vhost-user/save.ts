import { Command } from '@oclif/core';
import { fail } from '../../cli/fail.js';
import { controlFlag, controlPath } from '../../cli/switch-control.js';
import { controlOk } from '../../vhost-user/control/client.js';

export default class Save extends Command {
  static override summary = "Make a running switch write its configuration file (serve's --config): its ports now, so a restart brings them back.";
  static override enableJsonFlag = true;
  static override examples = ['<%= config.bin %> vhost-user add-port /run/vm3.sock && <%= config.bin %> vhost-user save'];
  static override flags = { control: controlFlag };

  async run(): Promise<unknown> {
    const { flags } = await this.parse(Save);
    try {
      const r = await controlOk(controlPath(flags.control), { op: 'save' });
      if (!this.jsonEnabled()) this.log(`saved ${String(r.ports)} port(s) to ${String(r.file)}`);
      return { file: r.file, ports: r.ports };
    } catch (e) {
      fail(this, e);
    }
  }
}
