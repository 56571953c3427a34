// The QEMU arguments for NICs whose fds QEMU inherits (`run`): pure, so the
// exact strings are unit-tested. Multiqueue follows QEMU's docs: one tap fd
// and one vhost-net fd per queue, and virtio-net-pci with mq=on and 2N+2
// MSI-X vectors (a TX and an RX interrupt per queue pair, config, control).
export interface NicFds {
  id: string;
  /** tap or macvtap queue fds, as numbered in QEMU (inherited). */
  queueFds: number[];
  /** vhost-net fds, one per queue, or none. */
  vhostFds: number[];
  mac?: string;
}

export function netdevArg(n: NicFds): string {
  if (n.queueFds.length === 0) throw new Error(`NIC ${n.id}: no queue fds`);
  if (n.vhostFds.length !== 0 && n.vhostFds.length !== n.queueFds.length) throw new Error(`NIC ${n.id}: ${n.queueFds.length} queues but ${n.vhostFds.length} vhost-net fds`);
  const parts = [`tap`, `id=${n.id}`];
  if (n.queueFds.length === 1) parts.push(`fd=${n.queueFds[0]}`);
  else parts.push(`fds=${n.queueFds.join(':')}`);
  if (n.vhostFds.length === 0) parts.push('vhost=off');
  else if (n.vhostFds.length === 1) parts.push('vhost=on', `vhostfd=${n.vhostFds[0]}`);
  else parts.push('vhost=on', `vhostfds=${n.vhostFds.join(':')}`);
  return parts.join(',');
}

export function deviceArg(n: NicFds): string {
  const parts = ['virtio-net-pci', `netdev=${n.id}`];
  const q = n.queueFds.length;
  if (q > 1) parts.push('mq=on', `vectors=${2 * q + 2}`);
  if (n.mac) parts.push(`mac=${n.mac}`);
  return parts.join(',');
}

export function nicArgs(n: NicFds): string[] {
  return ['-netdev', netdevArg(n), '-device', deviceArg(n)];
}

/**
 * A vhost-user NIC: QEMU connects to the switch port's socket itself. Under
 * TCG, QEMU 7.2 crashes with vhost-user unless MSI-X is off (vectors=0): a
 * KVM guest (`accel=kvm`, `-enable-kvm`) keeps its vectors.
 */
export function vhostUserNicArgs(id: string, socket: string, mac: string | undefined, kvm: boolean): string[] {
  const device = ['virtio-net-pci', `netdev=${id}`, ...(kvm ? [] : ['vectors=0']), ...(mac ? [`mac=${mac}`] : [])].join(',');
  return ['-chardev', `socket,id=chr-${id},path=${socket}`, '-netdev', `vhost-user,id=${id},chardev=chr-${id}`, '-device', device];
}

/** Guest RAM in MiB from QEMU's -m (N, NM, NG, size=...), default 128 as QEMU's. */
export function memoryMiB(argv: readonly string[]): number {
  const i = argv.lastIndexOf('-m');
  const v = i >= 0 ? argv[i + 1] : undefined;
  if (!v) return 128;
  const m = /^(?:size=)?(\d+)([MG]?)(?:,|$)/i.exec(v);
  if (!m) throw new Error(`cannot read the guest memory size from '-m ${v}'`);
  return Number(m[1]) * (m[2]?.toUpperCase() === 'G' ? 1024 : 1);
}

/**
 * vhost-user needs guest memory the back-end can map: unless the command
 * already shares it, a memfd backend of -m's size becomes the machine's RAM.
 */
export function sharedMemoryArgs(argv: readonly string[]): string[] {
  if (argv.some((a) => /share=on/.test(a))) return [];
  return ['-object', `memory-backend-memfd,id=qnh-mem,size=${memoryMiB(argv)}M,share=on`, '-machine', 'memory-backend=qnh-mem'];
}

export function wantsKvm(argv: readonly string[]): boolean {
  return argv.some((a) => a === '-enable-kvm' || /accel=kvm/.test(a) || a === 'kvm');
}

/** One command line for people (POSIX sh quoting), as --dry-run prints it. */
export function shellLine(argv: readonly string[]): string {
  return argv.map((a) => (/^[A-Za-z0-9_@%+=:,./-]+$/.test(a) ? a : `'${a.replace(/'/g, `'\\''`)}'`)).join(' ');
}
