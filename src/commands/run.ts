// `qemu-net-helper run`: the thin CLI over src/launch/launcher.ts.
import { Flags } from '@oclif/core';
import { QnhCommand } from '../cli/base.js';
import { fail } from '../cli/fail.js';
import { runWithNics } from '../launch/launcher.js';

export default class Run extends QnhCommand {
  static override summary = 'Set up NICs from the policies and run QEMU with them (multiqueue taps, macvtap, vhost-net fds), removing everything when QEMU exits.';
  static override description = 'Each --nic is the helper\'s policy flags as key=value,...: mode, br, dev, mac, mtu, queues, vhost (on|off|auto), profile, config, vf-pool (a+b; the old spelling vfpool is deprecated), id. QEMU gets the fds by inheritance; its exit status is ours.';
  static override strict = false;
  static override examples = [
    '<%= config.bin %> run --nic mode=bridge,br=br0,queues=4,vhost=on -- qemu-system-x86_64 -m 1G disk.img',
    '<%= config.bin %> run --nic mode=vepa,dev=eth1,mac=52:54:00:12:34:56 --dry-run -- qemu-system-x86_64 ...',
  ];
  static override flags = {
    nic: Flags.string({ summary: 'a NIC: key=value,... (repeatable)', multiple: true, default: [] }),
    'dry-run': Flags.boolean({ summary: 'set up and remove the NICs, print the QEMU command instead of running it' }),
    explain: Flags.boolean({ summary: 'print why each candidate was taken or skipped' }),
  };

  async run(): Promise<void> {
    const { flags, argv } = await this.parse(Run);
    try {
      const code = await runWithNics({ nics: flags.nic, command: argv as string[], dryRun: flags['dry-run'], explain: flags.explain });
      process.exit(code);
    } catch (e) {
      fail(this, e);
    }
  }
}
