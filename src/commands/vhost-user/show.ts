import { Command } from '@oclif/core';
import { fail } from '../../cli/fail.js';
import { controlFlag, controlPath, readSwitch } from '../../cli/switch-control.js';
import { showText } from '../../vhost-user/control/view.js';

export default class Show extends Command {
  static override summary = 'Show a running switch: its uplink, and each port with owner, mode, state, counters and learned MACs.';
  static override enableJsonFlag = true;
  static override examples = ['<%= config.bin %> vhost-user show', '<%= config.bin %> vhost-user show --control /run/sw.ctl --json'];
  static override flags = { control: controlFlag };

  async run(): Promise<unknown> {
    const { flags } = await this.parse(Show);
    try {
      const path = controlPath(flags.control);
      const v = await readSwitch(path);
      if (!this.jsonEnabled()) process.stdout.write(showText(v, path));
      return v;
    } catch (e) {
      fail(this, e);
    }
  }
}
