// Argument parsing for the helper protocol. QEMU passes
// `--use-vnet --fd=N --br=BR`, libvirt `--use-vnet --br=BR --fd=N`, and a
// helper string run through `sh -c` may add our own flags anywhere. This is
// hand-written rather than oclif's parser because it runs on QEMU's start-up
// path, where loading oclif would cost ~150 ms per NIC.
import { UsageError } from '../errors.js';
import { checkInterfaceName } from '../net/ifname.js';

export interface HelperArgs {
  useVnet: boolean;
  bridge: string;
  fd: number;
  acl?: string;
  help: boolean;
}

type Kind = 'bool' | 'string';
const FLAGS: Record<string, Kind> = {
  'use-vnet': 'bool',
  help: 'bool',
  br: 'string',
  fd: 'string',
  acl: 'string',
};

export const HELPER_USAGE = `usage: qemu-net-helper [helper] [--use-vnet] [--br=BRIDGE] --fd=FD [--acl=FILE]
  --use-vnet    give the tap a virtio-net header (IFF_VNET_HDR) when the kernel offers it
  --br=BRIDGE   bridge to attach the tap to (default br0), checked against the ACL
  --fd=FD       unix stream socket on which the tap fd is sent (SCM_RIGHTS, one byte 0x00)
  --acl=FILE    ACL file (default $QEMU_NET_HELPER_ACL, else /etc/qemu-net-helper/bridge.conf)`;

export function parseHelperArgs(argv: readonly string[]): HelperArgs {
  const seen = new Map<string, string | true>();
  for (let i = 0; i < argv.length; i++) {
    const a = argv[i]!;
    if (a === '-h') { seen.set('help', true); continue; }
    const m = /^--([a-z-]+)(?:=(.*))?$/s.exec(a);
    if (!m) throw new UsageError(`unexpected argument '${a}'`);
    const [, name, inline] = m as unknown as [string, string, string | undefined];
    const kind = FLAGS[name];
    if (!kind) throw new UsageError(`unknown flag '--${name}'`);
    if (kind === 'bool') {
      if (inline !== undefined) throw new UsageError(`flag '--${name}' takes no value`);
      seen.set(name, true);
      continue;
    }
    let value = inline;
    if (value === undefined) {
      value = argv[++i];
      if (value === undefined) throw new UsageError(`flag '--${name}' needs a value`);
    }
    seen.set(name, value);
  }
  if (seen.get('help')) return { useVnet: false, bridge: 'br0', fd: -1, help: true };
  const fdText = seen.get('fd');
  if (fdText === undefined) throw new UsageError('missing --fd=FD: the helper must be given the unix socket to send the tap on', 'QEMU and libvirt pass it themselves; run by hand, use "qemu-net-helper up" instead');
  if (typeof fdText !== 'string' || !/^\d{1,9}$/.test(fdText)) throw new UsageError(`--fd='${String(fdText)}' is not a file descriptor number`);
  const bridge = checkInterfaceName((seen.get('br') as string | undefined) ?? 'br0', 'bridge');
  const acl = seen.get('acl') as string | undefined;
  return { useVnet: seen.has('use-vnet'), bridge, fd: Number(fdText), ...(acl !== undefined ? { acl } : {}), help: false };
}
