import { Flags } from '@oclif/core';
import { QnhCommand } from '../cli/base.js';
import { runBridgeDemo } from '../demo/bridge-demo.js';
import { fail } from '../cli/fail.js';

export default class Demo extends QnhCommand {
  static override summary = 'Run the built-in demo: QEMU gets taps on a bridge from our helper, in a throwaway network namespace.';
  static override enableJsonFlag = true;
  static override flags = { quiet: Flags.boolean({ char: 'q', summary: 'print only the result' }) };

  async run(): Promise<unknown> {
    const { flags } = await this.parse(Demo);
    const json = this.jsonEnabled();
    try {
      const report = await runBridgeDemo(json || flags.quiet ? undefined : (l) => this.log(l));
      const ok = report.taps.length === 2 && report.taps.every((t) => t.master === report.bridge && t.mtu === report.bridgeMtu && t.vnetHdr) && report.tapsAfterQuit.length === 0;
      if (!json) this.log(ok ? 'demo OK' : 'demo FAILED: see above');
      if (!ok) process.exitCode = 1;
      return { ok, ...report };
    } catch (e) {
      fail(this, e);
    }
  }
}
