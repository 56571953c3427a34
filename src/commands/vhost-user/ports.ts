import { Command } from '@oclif/core';
import { fail } from '../../cli/fail.js';
import { controlFlag, controlPath, readSwitch } from '../../cli/switch-control.js';
import { portsText } from '../../vhost-user/control/view.js';

export default class Ports extends Command {
  static override summary = "List a running switch's ports: socket, owner, mode, state, counters, learned MACs.";
  static override enableJsonFlag = true;
  static override flags = { control: controlFlag };

  async run(): Promise<unknown> {
    const { flags } = await this.parse(Ports);
    try {
      const v = await readSwitch(controlPath(flags.control));
      if (!this.jsonEnabled()) process.stdout.write(portsText(v));
      return v.ports;
    } catch (e) {
      fail(this, e);
    }
  }
}
