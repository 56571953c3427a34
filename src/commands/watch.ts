import { Flags } from '@oclif/core';
import { QnhCommand } from '../cli/base.js';
import { processHost } from '../host/context.js';
import { watchEndpoint } from '../lifecycle/watcher.js';

// Started by the helper itself, detached; documented for completeness.
export default class Watch extends QnhCommand {
  static override summary = 'Wait for an endpoint\'s owner (QEMU) to exit, then release the endpoint (started by the helper).';
  static override hidden = true;
  static override flags = { id: Flags.string({ required: true }) };

  async run(): Promise<void> {
    const { flags } = await this.parse(Watch);
    await watchEndpoint(flags.id, processHost());
    // A waiter on a previous owner (e.g. libvirtd) may still be in the event loop.
    process.exit(0);
  }
}
