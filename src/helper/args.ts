// Argument parsing for the helper protocol. QEMU passes
// `--use-vnet --fd=N --br=BR`, libvirt `--use-vnet --br=BR --fd=N`, and a
// helper string run through `sh -c` may add our own flags anywhere. This is
// hand-written rather than oclif's parser because it runs on QEMU's start-up
// path, where loading oclif would cost ~150 ms per NIC.
import { UsageError } from '../errors.js';
import { checkInterfaceName } from '../net/ifname.js';
import type { RequestFlags } from '../policy/request.js';

export interface HelperArgs extends RequestFlags {
  /** Socket for the plain helper protocol; -1 with the extended protocol. */
  fd: number;
  acl?: string;
  help: boolean;
  // Policy flags beyond RequestFlags: any of these (or a profile named like --br) selects the policy path.
  profile?: string;
  config?: string;
  explain?: boolean;
  /** Extended protocol: socket for the JSON reply plus fds, and the transports the caller accepts. */
  socketpair?: number;
  protocols?: string[];
}

type Kind = 'bool' | 'string';
const FLAGS: Record<string, Kind> = {
  'use-vnet': 'bool',
  help: 'bool',
  br: 'string',
  fd: 'string',
  acl: 'string',
  mode: 'string',
  dev: 'string',
  mac: 'string',
  mtu: 'string',
  queues: 'string',
  profile: 'string',
  config: 'string',
  'vf-pool': 'string',
  explain: 'bool',
  socketpair: 'string',
  protocols: 'string',
};

export const HELPER_USAGE = `usage: qemu-net-helper [helper] [--use-vnet] [--br=BRIDGE] --fd=FD [--acl=FILE]
  --use-vnet    give the tap a virtio-net header (IFF_VNET_HDR) when the kernel offers it
  --br=BRIDGE   bridge to attach the tap to (default br0), checked against the ACL
  --fd=FD       unix stream socket on which the tap fd is sent (SCM_RIGHTS, one byte 0x00)
  --acl=FILE    ACL file (default $QEMU_NET_HELPER_ACL, else /etc/qemu-net-helper/bridge.conf)
policy flags (see README "Policies"):
  --mode=veb|vepa|private|bridge|nat|route|passthrough   --dev=IFNAME   --mac=MAC   --mtu=N
  --profile=NAME (default: a profile named like --br, if one exists)   --config=DIR
  --vf-pool=PF|PCI[,...]   --queues=N   --explain (why each candidate was taken or skipped, on stderr)
extended protocol:
  --socketpair=FD --protocols=tap,macvtap,vhost-kernel   (reply: one JSON line plus the fds)`;

/** True when the plain bridge fast path cannot serve these arguments. */
export function needsPolicy(a: HelperArgs): boolean {
  return a.mode !== undefined || a.dev !== undefined || a.mac !== undefined || a.mtu !== undefined || a.queues !== undefined ||
    a.profile !== undefined || a.vfPool !== undefined || a.explain === true || a.socketpair !== undefined || a.protocols !== undefined;
}

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
  const num = (name: string, min: number, max: number): number | undefined => {
    const v = seen.get(name);
    if (v === undefined) return undefined;
    if (typeof v !== 'string' || !/^\d{1,9}$/.test(v) || Number(v) < min || Number(v) > max) throw new UsageError(`--${name}='${String(v)}' is not a number from ${min} to ${max}`);
    return Number(v);
  };
  const str = (name: string): string | undefined => seen.get(name) as string | undefined;
  const extra: Partial<HelperArgs> = {};
  if (str('mode') !== undefined) extra.mode = str('mode')!;
  if (str('dev') !== undefined) extra.dev = checkInterfaceName(str('dev')!, 'device');
  if (str('mac') !== undefined) extra.mac = str('mac')!;
  if (str('profile') !== undefined) extra.profile = str('profile')!;
  if (str('config') !== undefined) extra.config = str('config')!;
  if (str('vf-pool') !== undefined) extra.vfPool = str('vf-pool')!.split(/[,+]/).filter(Boolean);
  if (str('protocols') !== undefined) extra.protocols = str('protocols')!.split(',').filter(Boolean);
  const mtu = num('mtu', 68, 65535);
  if (mtu !== undefined) extra.mtu = mtu;
  const queues = num('queues', 1, 16);
  if (queues !== undefined) extra.queues = queues;
  const sp = num('socketpair', 0, 999999999);
  if (sp !== undefined) extra.socketpair = sp;
  if (seen.has('explain')) extra.explain = true;
  if (sp !== undefined && !seen.has('fd')) {
    const bridge = checkInterfaceName((seen.get('br') as string | undefined) ?? 'br0', 'bridge');
    const acl = seen.get('acl') as string | undefined;
    return { useVnet: seen.has('use-vnet'), bridge, bridgeGiven: seen.has('br'), fd: -1, ...(acl !== undefined ? { acl } : {}), help: false, ...extra };
  }
  const fdText = seen.get('fd');
  if (fdText === undefined) throw new UsageError('missing --fd=FD: the helper must be given the unix socket to send the tap on', 'QEMU and libvirt pass it themselves; run by hand, use "qemu-net-helper up" instead');
  if (typeof fdText !== 'string' || !/^\d{1,9}$/.test(fdText)) throw new UsageError(`--fd='${String(fdText)}' is not a file descriptor number`);
  const bridge = checkInterfaceName((seen.get('br') as string | undefined) ?? 'br0', 'bridge');
  const acl = seen.get('acl') as string | undefined;
  return { useVnet: seen.has('use-vnet'), bridge, ...(seen.has('br') ? { bridgeGiven: true } : {}), fd: Number(fdText), ...(acl !== undefined ? { acl } : {}), help: false, ...extra };
}
