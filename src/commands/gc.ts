import { QnhCommand } from '../cli/base.js';
import { ExitCode } from '../errors.js';
import { fail } from '../cli/fail.js';
import { gcAll, type GcAllReport } from '../lifecycle/gc.js';
import { needsBroker, viaBroker } from '../broker/client.js';
import { processHost } from '../host/context.js';

export default class Gc extends QnhCommand {
  static override summary = 'Remove endpoints and VF claims whose owners are gone (the safety net when a watcher died).';
  static override enableJsonFlag = true;

  async run(): Promise<unknown> {
    await this.parse(Gc);
    try {
      const r = needsBroker() ? await viaBroker<GcAllReport>({ v: 1, op: 'gc' }) : gcAll(processHost());
      if (!this.jsonEnabled()) {
        for (const e of r.endpoints.released) this.log(`endpoint ${e.id}: released ${e.released.join(', ') || 'nothing left'}${e.skipped.length ? `; ${e.skipped.join('; ')}` : ''}${e.failed.length ? `; FAILED: ${e.failed.join('; ')}` : ''}`);
        for (const e of r.endpoints.kept) this.log(`endpoint ${e.id}: kept (${e.why})`);
        for (const e of r.endpoints.corrupt) this.logToStderr(`qemu-net-helper: unreadable record ${e.file}: ${e.why}`);
        for (const v of r.vfClaims) this.log(`VF ${v.pci}: ${v.action}`);
      }
      if (r.endpoints.released.some((e) => e.failed.length)) process.exitCode = ExitCode.SETUP_FAILED;
      return r;
    } catch (e) {
      fail(this, e);
    }
  }
}
