import { Command } from '@oclif/core';
import { fail } from '../../cli/fail.js';
import { controlFlag, controlPath, readSwitch } from '../../cli/switch-control.js';
import { fdbText } from '../../vhost-user/control/view.js';

export default class Fdb extends Command {
  static override summary = "A running switch's MAC table: each learned MAC, its port (a number or \"uplink\") and its age.";
  static override enableJsonFlag = true;
  static override flags = { control: controlFlag };

  async run(): Promise<unknown> {
    const { flags } = await this.parse(Fdb);
    try {
      const v = await readSwitch(controlPath(flags.control));
      if (!this.jsonEnabled()) process.stdout.write(fdbText(v));
      return v.macs;
    } catch (e) {
      fail(this, e);
    }
  }
}
