import { Args } from '@oclif/core';
import { QnhCommand } from '../cli/base.js';
import { ExitCode } from '../errors.js';
import { fail } from '../cli/fail.js';
import { takeDown, type DownReport } from '../lifecycle/release.js';
import { processCaller } from '../access/caller.js';
import { needsBroker, viaBroker } from '../broker/client.js';
import { processHost } from '../host/context.js';

export default class Down extends QnhCommand {
  static override summary = 'Tear an endpoint down. Idempotent: an endpoint that is already gone is success.';
  static override enableJsonFlag = true;
  static override args = { id: Args.string({ required: true, description: 'endpoint id (see list)' }) };

  async run(): Promise<unknown> {
    const { args } = await this.parse(Down);
    try {
      const r = needsBroker()
        ? await viaBroker<DownReport>({ v: 1, op: 'down', id: args.id })
        : takeDown(args.id, processHost(), processCaller());
      if (!this.jsonEnabled()) {
        if (r.alreadyGone) this.log(`endpoint ${args.id}: already gone`);
        for (const x of r.released) this.log(`released ${x}`);
        for (const x of r.skipped) this.log(x);
        for (const x of r.failed) this.logToStderr(`qemu-net-helper: could not release ${x}`);
      }
      if (r.failed.length) process.exitCode = ExitCode.SETUP_FAILED;
      return r;
    } catch (e) {
      fail(this, e);
    }
  }
}
