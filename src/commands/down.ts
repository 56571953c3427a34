import { Args, Command } from '@oclif/core';
import { ExitCode } from '../errors.js';
import { fail } from '../cli/fail.js';
import { releaseEndpoint, type ReleaseReport } from '../lifecycle/release.js';
import { needsBroker, viaBroker } from '../broker/client.js';
import { processHost } from '../host/context.js';
import { loadEndpoint } from '../state/endpoints.js';

export default class Down extends Command {
  static override summary = 'Tear an endpoint down. Idempotent: an endpoint that is already gone is success.';
  static override enableJsonFlag = true;
  static override args = { id: Args.string({ required: true, description: 'endpoint id (see list)' }) };

  async run(): Promise<unknown> {
    const { args } = await this.parse(Down);
    try {
      if (needsBroker()) {
        const r = await viaBroker<ReleaseReport & { alreadyGone: boolean }>({ v: 1, op: 'down', id: args.id });
        if (!this.jsonEnabled()) {
          if (r.alreadyGone) this.log(`endpoint ${args.id}: already gone`);
          for (const x of r.released) this.log(`released ${x}`);
        }
        return r;
      }
      const host = processHost();
      const rec = loadEndpoint(host.stateDir, args.id);
      if (!rec) {
        if (!this.jsonEnabled()) this.log(`endpoint ${args.id}: already gone`);
        return { id: args.id, released: [], failed: [], alreadyGone: true };
      }
      const r = releaseEndpoint(rec, host);
      if (!this.jsonEnabled()) {
        for (const x of r.released) this.log(`released ${x}`);
        for (const x of r.failed) this.logToStderr(`qemu-net-helper: could not release ${x}`);
      }
      if (r.failed.length) process.exitCode = ExitCode.SETUP_FAILED;
      return { ...r, alreadyGone: false };
    } catch (e) {
      fail(this, e);
    }
  }
}
