import { Args, Flags } from '@oclif/core';
import { QnhCommand } from '../cli/base.js';
import { ExitCode, UsageError } from '../errors.js';
import { fail } from '../cli/fail.js';
import { forgetEndpoint, takeDown, type DownReport } from '../lifecycle/release.js';
import { processCaller } from '../access/caller.js';
import { needsBroker, viaBroker } from '../broker/client.js';
import { processHost } from '../host/context.js';

export default class Down extends QnhCommand {
  static override summary = 'Tear an endpoint down, in the network namespace it was made in. Idempotent: an endpoint released before is success; an id never made exits 5.';
  static override description = 'An endpoint made in another network namespace is released there (nsenter). When that namespace no longer exists, down refuses (exit 5) and --forget drops the record (root).';
  static override flags = { forget: Flags.boolean({ summary: 'drop the record without releasing anything (root; for an endpoint whose namespace is gone)' }) };
  static override enableJsonFlag = true;
  static override args = { id: Args.string({ required: true, description: 'endpoint id (see list)' }) };

  async run(): Promise<unknown> {
    const { args, flags } = await this.parse(Down);
    try {
      if (flags.forget && needsBroker()) throw new UsageError('--forget is only for root', 'an endpoint of yours is released with down ID');
      const r = flags.forget ? forgetEndpoint(args.id, processHost(), processCaller()) : needsBroker()
        ? await viaBroker<DownReport>({ v: 1, op: 'down', id: args.id })
        : takeDown(args.id, processHost(), processCaller());
      if (!this.jsonEnabled()) {
        if (r.alreadyGone) this.log(`endpoint ${args.id}: already gone`);
        if (r.forgotten) this.log(`endpoint ${args.id}: record dropped`);
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
