import { QnhCommand } from '../cli/base.js';
import { HELPER_USAGE } from '../helper/args.js';
import { createRequire } from 'node:module';
import { helperMain } from '../helper/main.js';

// The bin script dispatches `helper` before oclif loads (start-up cost); this
// class exists so the command is listed and documented, and for programmatic use.
export default class Helper extends QnhCommand {
  static override summary = 'Run the QEMU/libvirt network helper protocol (what -netdev tap,helper= and bridge_helper execute).';
  static override description = `${HELPER_USAGE}

QEMU also runs the bare form without the word "helper":
  -netdev tap,id=n0,helper=/usr/local/bin/qemu-net-helper
  -netdev bridge,id=n0,br=br0,helper="qemu-net-helper helper --acl=/etc/my.conf"
Nothing is ever written to stdout (it may be QEMU's monitor); errors go to stderr as one line.`;
  static override strict = false;

  async run(): Promise<void> {
    // Same bundle the bin script uses for the policy path (synchronous require).
    const req = createRequire(import.meta.url);
    const code = helperMain(this.argv, () => req('../../helper-full.cjs'));
    if (code !== 0) this.exit(code);
  }
}
