import { Flags } from '@oclif/core';
import { QnhCommand } from '../cli/base.js';
import { probeHost } from '../lifecycle/probe.js';
import { processHost } from '../host/context.js';

export default class Probe extends QnhCommand {
  static override summary = 'Show which kernel implementations and transports work on this host, and why not when they do not.';
  static override enableJsonFlag = true;
  static override flags = {
    dev: Flags.string({ summary: 'probe against this uplink/parent/bridge device' }),
  };

  async run(): Promise<unknown> {
    const { flags } = await this.parse(Probe);
    const rows = probeHost(processHost(), flags.dev ? { dev: flags.dev } : {});
    if (!this.jsonEnabled()) {
      for (const r of rows) this.log(`${r.kind.padEnd(9)} ${r.name.padEnd(12)} ${r.available ? 'yes' : 'no '}  ${r.reason}`);
    }
    return rows;
  }
}
