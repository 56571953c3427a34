import { Command } from '@oclif/core';
import { fail } from '../../cli/fail.js';
import { controlFlag, controlPath, readSwitch } from '../../cli/switch-control.js';
import { statsRows, statsText } from '../../vhost-user/control/view.js';

export default class Stats extends Command {
  static override summary = "A running switch's counters: one row per port, and one for the uplink (\"port\":\"uplink\").";
  static override enableJsonFlag = true;
  static override flags = { control: controlFlag };

  async run(): Promise<unknown> {
    const { flags } = await this.parse(Stats);
    try {
      const v = await readSwitch(controlPath(flags.control));
      if (!this.jsonEnabled()) process.stdout.write(statsText(v));
      return statsRows(v);
    } catch (e) {
      fail(this, e);
    }
  }
}
