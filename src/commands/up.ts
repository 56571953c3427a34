import { Flags } from '@oclif/core';
import { QnhCommand } from '../cli/base.js';
import { fail } from '../cli/fail.js';
import { qemuArgsFor, qemuMemorySize, up, type UpResult } from '../setup/up.js';
import { UsageError } from '../errors.js';
import { needsBroker, viaBroker } from '../broker/client.js';
import { processCaller } from '../access/caller.js';
import { callerIsRoot, configPaths, processHost } from '../host/context.js';
import { MODES } from '../backends/types.js';

export default class Up extends QnhCommand {
  static override summary = 'Set up an endpoint from policy flags and print what was made and the QEMU -netdev arguments to use.';
  static override description = 'Everything is persistent until "qemu-net-helper down ID" (or gc). QEMU then opens the tap by name, or the macvtap device as an fd. --mode or --profile is required. --br is the bridge (QEMU\'s word, as for the helper); --dev the device any mode attaches to (bridge, macvtap parent, uplink), taking precedence. --transport=vhost-user needs --memory (the guest\'s RAM, as -m): vhost-user shares guest memory.';
  static override enableJsonFlag = true;
  static override examples = [
    '<%= config.bin %> up --mode=bridge --br=br0 --json',
    '<%= config.bin %> up --mode=veb --transport=vhost-user --memory=1G',
    '<%= config.bin %> up --mode=vepa --dev=eth1 --mac=52:54:00:12:34:56 --id vm1-nic0',
  ];
  static override flags = {
    mode: Flags.string({ summary: 'policy mode', options: [...MODES] }),
    br: Flags.string({ summary: 'bridge (QEMU\'s word; as the helper\'s --br)' }),
    dev: Flags.string({ summary: 'device the mode attaches to: bridge, macvtap parent or uplink (default: --br)' }),
    mac: Flags.string({ summary: 'guest MAC (unicast)' }),
    mtu: Flags.integer({ summary: 'MTU', min: 68, max: 65535 }),
    profile: Flags.string({ summary: 'profile name (from CONFIG/profiles/NAME.json)' }),
    config: Flags.string({ summary: 'configuration directory (root only; default $QEMU_NET_HELPER_CONFIG or /etc/qemu-net-helper)' }),
    'vf-pool': Flags.string({ summary: 'PFs or VF PCI addresses to take a VF from, separated by , or +' }),
    memory: Flags.string({ summary: 'guest RAM as for QEMU -m (512M, 2G; a bare number is MiB): completes the vhost-user command line' }),
    id: Flags.string({ summary: 'endpoint id (default: generated)' }),
    transport: Flags.string({ summary: 'how QEMU gets the packets (default: the policy picks tap or macvtap)', options: ['tap', 'macvtap', 'vhost-user'] }),
    explain: Flags.boolean({ summary: 'print why each candidate was taken or skipped' }),
  };

  async run(): Promise<unknown> {
    const { flags } = await this.parse(Up);
    try {
      const memory = flags.memory === undefined ? undefined : qemuMemorySize(flags.memory);
      if (memory === null) throw new UsageError(`--memory=${flags.memory} is not a memory size`, 'give it as for QEMU -m: 512M, 2G, or a number of MiB');
      if (flags.transport === 'vhost-user' && !memory) throw new UsageError('--transport=vhost-user needs --memory (the guest\'s RAM, as -m)', 'vhost-user shares guest memory: QEMU needs a shared memory backend of exactly that size');
      const dev = flags.dev ?? flags.br;
      const options = {
        ...(flags.mode ? { mode: flags.mode } : {}), ...(dev ? { dev } : {}), ...(flags.mac ? { mac: flags.mac } : {}),
        ...(flags.mtu ? { mtu: flags.mtu } : {}), ...(flags.profile ? { profile: flags.profile } : {}),
        ...(flags['vf-pool'] ? { vfPool: flags['vf-pool'].split(/[,+]/).filter(Boolean) } : {}), ...(flags.id ? { id: flags.id } : {}),
        ...(flags.transport ? { transport: flags.transport as 'tap' | 'macvtap' | 'vhost-user' } : {}),
      };
      const made = needsBroker()
        ? await viaBroker<UpResult>({ v: 1, op: 'up', options })
        : up(options, { host: processHost(), config: configPaths({ config: flags.config }, process.env, callerIsRoot()).config, acl: null, caller: processCaller() });
      const r: UpResult = { ...made, qemu: qemuArgsFor(made.endpoint, memory) };
      if (!this.jsonEnabled()) {
        if (flags.explain) for (const e of r.explain) this.log(`explain: ${e.kernel}/${e.transport}: ${e.decision}: ${e.reason}`);
        this.log(`endpoint ${r.endpoint.id}: ${r.endpoint.kernel}/${r.endpoint.transport} ${r.endpoint.ifname}${r.endpoint.devicePath ? ` (${r.endpoint.devicePath})` : ''} mac ${r.endpoint.mac ?? '-'} mtu ${r.endpoint.mtu}`);
        this.log(`QEMU: ${r.qemu.shell}`);
        if (r.endpoint.devicePath) this.log(`      (open the device as fd 3: ... 3<>${r.endpoint.devicePath})`);
        this.log(`remove with: qemu-net-helper down ${r.endpoint.id}`);
      }
      return r;
    } catch (e) {
      fail(this, e);
    }
  }
}
