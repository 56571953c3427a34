// Kernel implementation "macvtap": a macvtap link on a parent device, in one of
// the four macvlan modes, and its character device /dev/tapN (N = ifindex)
// opened once per queue. The fd is what QEMU gets; it answers TUNGETIFF like a
// tap fd. Unlike a tap, the link does not die with the fd: it is an owned
// object, removed by release().
//
// Modes (what the kernel does with frames between macvtaps of one parent):
//   vepa     - everything goes out to the adjacent switch (802.1Qbg hairpin needed for guest<->guest)
//   bridge   - guests on the same parent talk directly; "veb" in policy terms
//   private  - guests on the same parent never talk, even through a hairpin switch
//   passthru - one guest owns the parent (promiscuous, may change its MAC); only one per parent
//
// The host cannot talk to its own guests over a macvtap (frames from the
// parent's IP stack never loop back into the macvtap): that is the kernel's
// design, not a setup fault.
import { execFileSync } from 'node:child_process';
import { SAFE_PATH } from '../../host/context.js';
import { randomBytes } from 'node:crypto';
import { lstatSync, readFileSync, rmSync, statSync } from 'node:fs';
import { join } from 'node:path';
import { ConfigError, ExhaustedError, NotFoundError, PermissionError, SetupError, UsageError } from '../../errors.js';
import { checkInterfaceName, interfaceNameProblem } from '../../net/ifname.js';
import { ip, IpError, ipJson, linkKind, linkShow, type LinkInfo } from '../../net/ip.js';
import { checkGuestMac, formatMac, generateMac } from '../../net/mac.js';
import type { Rollback } from '../../state/rollback.js';
import { closeFd, openReadWrite, SysError } from '../../sys/libc.js';
import { ifIndex, setUp } from '../../sys/netdev.js';
import { IFF_MULTI_QUEUE, IFF_VNET_HDR, setVnetHdrSize, tunFeatures, tunGetIff, tunSetIff, VNET_HDR_LEN } from '../../sys/tun.js';
import type { Availability, EndpointRequest, HostContext, KernelBackend, KernelEndpoint, OwnedObject } from '../types.js';
import { linkMarker, markNewLink, releaseLink } from './klink.js';
import { dataNumber, dataString, ipReason, kernelFailure, stringParam } from './kerrors.js';
import { FEATURES, kernelHas } from './kprobe.js';
import { ensureVlanLink, KIND_VLAN, releaseVlanLink } from './vlan.js';

// coreutils' mknod at its fixed path: the caller's PATH must not choose what we run as root.
const MKNOD = '/usr/bin/mknod';

const MACVTAP_MODES = ['vepa', 'bridge', 'private', 'passthru'] as const;
export type MacvtapMode = (typeof MACVTAP_MODES)[number];

const OWNED_KIND = 'macvtap';

/** The macvtap mode for a request: params.macvtapMode wins, else derived from the policy mode. */
export function macvtapModeFor(req: Pick<EndpointRequest, 'mode' | 'params'>): MacvtapMode {
  const explicit = stringParam(req.params, 'macvtapMode');
  if (explicit !== undefined) {
    if (explicit === 'passthrough') return 'passthru';
    if ((MACVTAP_MODES as readonly string[]).includes(explicit)) return explicit as MacvtapMode;
    throw new ConfigError(`macvtapMode '${explicit}' is not one of ${MACVTAP_MODES.join(', ')}`);
  }
  switch (req.mode) {
    case 'vepa': return 'vepa';
    case 'private': return 'private';
    case 'veb':
    case 'bridge': return 'bridge';
    case 'passthrough': return 'passthru';
    default:
      throw new UsageError(`mode '${req.mode}' cannot be made with a macvtap`, 'macvtap does the modes veb, vepa, private and passthrough');
  }
}

/** macvlan/macvtap links whose lower device is `parent` (in this namespace). */
function childrenOf(parent: string): LinkInfo[] {
  return ipJson<LinkInfo & { link?: string }>('-d', 'link', 'show')
    .filter((l) => l.link === parent && ['macvlan', 'macvtap'].includes(linkKind(l)));
}

function pickName(): string {
  for (let i = 0; i < 4096; i++) {
    if (ifIndex(`macvtap${i}`) === 0) return `macvtap${i}`;
  }
  throw new ExhaustedError('no free macvtapN name left (macvtap0..macvtap4095 all exist)', 'remove stale macvtap links or pass params.ifname');
}

// glibc's dev_t encoding (gnu_dev_major/minor), on the 64-bit rdev Node's bigint stat gives.
function devMajor(rdev: bigint): number {
  return Number(((rdev >> 8n) & 0xfffn) | ((rdev >> 32n) & ~0xfffn));
}
function devMinor(rdev: bigint): number {
  return Number((rdev & 0xffn) | ((rdev >> 12n) & ~0xffn));
}

/**
 * Major:minor of the macvtap's character device, from sysfs. The minor is
 * allocated by the driver, not derived from anything we know, so sysfs is
 * the only source. sysfs shows the network namespace it was mounted in
 * (`ip netns exec` remounts it): the ifindex file must agree with what the
 * kernel told us, or we would read another namespace's device.
 */
function macvtapDevNumbers(sysfsRoot: string, name: string, ifindex: number): { major: number; minor: number } {
  const base = join(sysfsRoot, 'class/net', name);
  let seen: string;
  try {
    seen = readFileSync(join(base, 'ifindex'), 'latin1').trim();
  } catch {
    seen = '';
  }
  if (seen !== String(ifindex)) {
    throw new SetupError(
      `${sysfsRoot} does not show this network namespace (${name} has ifindex ${ifindex} here, ${seen ? `sysfs says ${seen}` : 'sysfs does not know it'})`,
      "run the helper through 'ip netns exec', which remounts /sys for the namespace",
    );
  }
  let dev: string;
  try {
    dev = readFileSync(join(base, 'macvtap', `tap${ifindex}`, 'dev'), 'latin1').trim();
  } catch (e) {
    throw new SetupError(`cannot read the device number of ${name} from ${base}/macvtap/tap${ifindex}/dev: ${(e as NodeJS.ErrnoException).code ?? e}`);
  }
  const m = /^(\d+):(\d+)$/.exec(dev);
  if (!m) throw new SetupError(`unexpected device number '${dev}' for ${name}`);
  return { major: Number(m[1]), minor: Number(m[2]) };
}

/**
 * Opens the macvtap character device `count` times. /dev/tapN is used when it
 * is the right device; it may be missing (no udev/devtmpfs in a container) or
 * belong to another macvtap (devtmpfs names nodes by ifindex, and ifindexes
 * repeat across network namespaces). Then a private node is made with mknod,
 * opened and unlinked at once: nothing is left in /dev.
 */
export function openMacvtapDevice(ifindex: number, major: number, minor: number, count: number, scratchDirs: string[]): { fds: number[]; devicePath?: string } {
  const fds: number[] = [];
  const openAll = (path: string): void => {
    while (fds.length < count) fds.push(openReadWrite(path));
  };
  try {
    const standard = `/dev/tap${ifindex}`;
    const st = statSync(standard, { bigint: true, throwIfNoEntry: false });
    if (st && st.isCharacterDevice() && devMajor(st.rdev) === major && devMinor(st.rdev) === minor) {
      openAll(standard);
      return { fds, devicePath: standard };
    }
    const problems: string[] = [];
    for (const dir of scratchDirs) {
      const node = join(dir, `.qnh-tap${ifindex}-${process.pid}-${randomBytes(3).toString('hex')}`);
      try {
        execFileSync(MKNOD, ['-m', '600', node, 'c', String(major), String(minor)], { stdio: ['ignore', 'ignore', 'pipe'], env: { PATH: SAFE_PATH } });
      } catch (e) {
        problems.push(`${dir}: ${((e as { stderr?: Buffer }).stderr?.toString() ?? String(e)).trim().split('\n')[0]}`);
        continue;
      }
      try {
        openAll(node);
        return { fds };
      } catch (e) {
        // A nodev mount refuses to open device nodes (EACCES): try the next directory.
        if (e instanceof SysError && (e.code === 'EACCES' || e.code === 'EPERM')) {
          problems.push(`${dir}: open ${e.code}`);
          continue;
        }
        throw e;
      } finally {
        try { rmSync(node, { force: true }); } catch { /* best effort */ }
      }
    }
    throw new SetupError(
      `cannot open the macvtap device ${major}:${minor}: ${standard} is ${st ? 'another device' : 'missing'} and no private node could be made (${problems.join('; ')})`,
      'the helper needs CAP_MKNOD and a directory without nodev (e.g. /dev), or a udev/devtmpfs /dev',
    );
  } catch (e) {
    for (const fd of fds) closeFd(fd);
    throw e;
  }
}

/**
 * What libvirt does on a macvtap fd (virNetDevMacVLanTapSetup): read the
 * flags with TUNGETIFF, set or clear IFF_VNET_HDR (a macvtap queue starts
 * *with* it on) and IFF_MULTI_QUEUE, write them back with TUNSETIFF. Then the
 * header length, like createTap does for taps. Returns whether the header is on.
 */
function configureMacvtapFd(fd: number, vnetHdr: boolean, multiQueue: boolean): boolean {
  const iff = tunGetIff(fd);
  if (!iff) throw new SetupError('the macvtap device does not answer TUNGETIFF');
  let flags = iff.flags;
  if (vnetHdr && (tunFeatures(fd) & IFF_VNET_HDR)) flags |= IFF_VNET_HDR;
  else flags &= ~IFF_VNET_HDR;
  if (multiQueue) flags |= IFF_MULTI_QUEUE;
  else flags &= ~IFF_MULTI_QUEUE;
  if (flags !== iff.flags) tunSetIff(fd, iff.name, flags);
  const on = (flags & IFF_VNET_HDR) !== 0;
  if (on) setVnetHdrSize(fd, VNET_HDR_LEN);
  return on;
}

function checkParent(parent: string): LinkInfo {
  let info: (LinkInfo & { link_type?: string }) | null;
  try {
    info = linkShow(parent);
  } catch (e) {
    kernelFailure(e, `looking up parent device '${parent}'`);
  }
  if (!info) throw new NotFoundError(`parent device '${parent}' does not exist in this network namespace`, "check the name with 'ip link' or pass another --dev");
  if (info.link_type !== undefined && info.link_type !== 'ether') {
    throw new UsageError(`parent device '${parent}' is not an Ethernet device (link type ${info.link_type})`, 'a macvtap needs an Ethernet parent: a NIC, bond, bridge, veth or VLAN device');
  }
  const slave = info.linkinfo?.info_slave_kind;
  if (slave && info.master && ['bridge', 'bond', 'team', 'openvswitch'].includes(slave)) {
    // The kernel would say EBUSY: a port's receive handler belongs to its master.
    throw new ConfigError(
      `parent device '${parent}' is a port of ${slave} '${info.master}' and cannot also carry macvtaps`,
      `use '${info.master}' as the parent, or the bridge kernel implementation`,
    );
  }
  return info;
}

export function setupMacvtap(req: EndpointRequest, host: HostContext, rb: Rollback): KernelEndpoint {
  if (!req.dev) throw new UsageError('macvtap needs a parent device', 'pass --dev=<uplink>');
  // With a VLAN the macvtap's parent is --dev's VLAN link (made if missing).
  const parent = req.vlan ? ensureVlanLink(checkInterfaceName(req.dev, 'parent device'), req.vlan, 'macvtap', linkMarker(req.params, 'macvtap'), rb).ifname : checkInterfaceName(req.dev, 'parent device');
  const mode = macvtapModeFor(req);
  const queues = req.queues > 0 ? req.queues : 1;
  const wanted = stringParam(req.params, 'ifname');
  if (wanted !== undefined) checkInterfaceName(wanted, 'macvtap');
  // Validate everything the user gave before touching the kernel.
  let mac: Buffer | null = req.mac ? checkGuestMac(req.mac) : null;
  const info = checkParent(parent);
  if (req.mtu !== undefined && req.mtu > info.mtu) {
    throw new UsageError(`MTU ${req.mtu} is larger than the parent's (${parent}: ${info.mtu})`, `a macvtap's MTU is at most its parent's: raise ${parent}'s MTU or ask for ${info.mtu} or less`);
  }
  const mtu = req.mtu ?? info.mtu;

  const children = childrenOf(parent);
  const holder = children.find((l) => l.linkinfo?.info_data?.mode === 'passthru');
  if (holder) {
    throw new ExhaustedError(`parent device '${parent}' is taken by passthru macvtap '${holder.ifname}'`, 'a passthru macvtap owns its parent alone; release that guest first or use another parent');
  }
  if (mode === 'passthru' && children.length > 0) {
    throw new ExhaustedError(
      `parent device '${parent}' already carries ${children.map((l) => `${linkKind(l)} '${l.ifname}'`).join(', ')}; passthru needs it alone`,
      'use vepa/bridge/private mode, or another parent',
    );
  }
  // passthru: the macvtap takes the parent's own address; a given guest MAC
  // is set afterwards, which changes the parent's MAC too (the kernel puts
  // the original back when the macvtap goes). Other modes need a MAC of
  // their own: the guest's, or a generated one the guest must then use.
  if (mode !== 'passthru' && !mac) mac = generateMac();

  let name = '';
  for (let attempt = 0; ; attempt++) {
    name = wanted ?? pickName();
    const args = ['link', 'add', 'link', parent, 'name', name];
    if (mac && mode !== 'passthru') args.push('address', formatMac(mac));
    if (req.mtu !== undefined) args.push('mtu', String(mtu));
    args.push('type', 'macvtap', 'mode', mode);
    try {
      ip(...args);
      break;
    } catch (e) {
      if (e instanceof IpError) {
        const reason = ipReason(e);
        // Another helper took the name between our look and our add: next one.
        if (/File exists/i.test(reason) && !wanted && attempt < 16) continue;
        if (/File exists/i.test(reason)) throw new ConfigError(`an interface named '${name}' already exists`, 'choose another params.ifname');
        if (/Device or resource busy/i.test(reason)) {
          throw new ConfigError(`the kernel refused a macvtap on '${parent}' (busy): it is enslaved or its receive path is taken`, 'use its master as the parent');
        }
        if (/Invalid argument/i.test(reason) && (mode === 'passthru' || childrenOf(parent).some((l) => l.linkinfo?.info_data?.mode === 'passthru'))) {
          throw new ExhaustedError(`the kernel refused a ${mode} macvtap on '${parent}': a passthru macvtap owns its parent alone`, 'release the other macvtap first or use another parent');
        }
      }
      kernelFailure(e, `creating macvtap '${name}' on '${parent}'`);
    }
  }
  // Marked first (release deletes only links carrying it), then journaled at
  // once: a helper killed from here on leaves a record that gc can release.
  const marker = linkMarker(req.params, 'macvtap');
  markNewLink(name, marker);
  const ifindex = ifIndex(name);
  const owned: OwnedObject = { kind: OWNED_KIND, data: { ifname: name, ifindex, marker, parent, mode } };
  rb.add(`delete macvtap ${name}`, () => { releaseMacvtap(owned); }, { backend: 'macvtap', obj: owned });

  try {
    if (mac && mode === 'passthru') ip('link', 'set', 'dev', name, 'address', formatMac(mac));
    try {
      setUp(name);
    } catch (e) {
      if (e instanceof SysError && e.code === 'EADDRINUSE') {
        throw new UsageError(`MAC ${formatMac(mac!)} is already used by another macvlan/macvtap on '${parent}'`, 'give each guest its own MAC');
      }
      throw e;
    }
  } catch (e) {
    kernelFailure(e, `setting up macvtap '${name}'`);
  }
  const actual = linkShow(name);
  if (!actual) throw new SetupError(`macvtap '${name}' vanished right after it was made`);
  // Not host.sysfsRoot: QEMU_NET_HELPER_SYSFS points SR-IOV discovery at a
  // (possibly fake) tree and says nothing about macvtap devices.
  const { major, minor } = macvtapDevNumbers(host.netSysfsRoot, name, ifindex);

  let opened: { fds: number[]; devicePath?: string };
  try {
    opened = openMacvtapDevice(ifindex, major, minor, queues, ['/dev', host.stateDir]);
  } catch (e) {
    if (e instanceof SysError && (e.code === 'EPERM' || e.code === 'EACCES')) {
      throw new PermissionError(`no permission to open the macvtap device of ${name} (${e.code})`, 'the helper needs to run as root or with CAP_NET_ADMIN and access to /dev/tapN');
    }
    kernelFailure(e, `opening the device of macvtap '${name}'`);
  }
  for (const fd of opened.fds) rb.add(`close ${name} queue fd`, () => closeFd(fd));
  let vnetHdr = false;
  try {
    for (const fd of opened.fds) vnetHdr = configureMacvtapFd(fd, req.vnetHdr, queues > 1);
  } catch (e) {
    kernelFailure(e, `configuring the queues of macvtap '${name}'`);
  }
  const ownedAll: OwnedObject[] = [owned];
  let devicePath = opened.devicePath;
  if (req.persist && !devicePath) {
    // `up`: QEMU will open the device by path itself, so a path must exist.
    const node = persistentDeviceNode(ifindex, major, minor);
    rb.add(`remove ${node.data.path}`, () => { releaseDeviceNode(node); }, { backend: 'macvtap', obj: node });
    ownedAll.push(node);
    devicePath = String(node.data.path);
  }

  return {
    kernel: 'macvtap',
    ifname: name,
    ...(devicePath ? { devicePath } : {}),
    fds: opened.fds,
    vnetHdr,
    mac: actual.address ?? (mac ? formatMac(mac) : undefined),
    mtu: actual.mtu,
    owned: ownedAll,
    info: { parent, mode, ifindex, chardev: `${major}:${minor}`, queues, macGenerated: !req.mac && mode !== 'passthru' },
  };
}

const KIND_DEVNODE = 'macvtap-devnode';

/**
 * Makes /dev/tapN for a macvtap that must be opened by path later (`up`),
 * when devtmpfs/udev did not. A /dev/tapN that is another device (an ifindex
 * clash between namespaces) is not ours to replace: that is an error.
 */
function persistentDeviceNode(ifindex: number, major: number, minor: number): OwnedObject {
  const path = `/dev/tap${ifindex}`;
  const st = statSync(path, { bigint: true, throwIfNoEntry: false });
  if (st) {
    throw new SetupError(
      `${path} is another device (${devMajor(st.rdev)}:${devMinor(st.rdev)}, not ${major}:${minor}), so QEMU could not open this macvtap by path`,
      'an interface of another network namespace has the same ifindex; use the helper (which passes the fd) instead of up, or free that index',
    );
  }
  try {
    execFileSync(MKNOD, ['-m', '600', path, 'c', String(major), String(minor)], { stdio: ['ignore', 'ignore', 'pipe'], env: { PATH: SAFE_PATH } });
  } catch (e) {
    throw new SetupError(`cannot create ${path}: ${((e as { stderr?: Buffer }).stderr?.toString() ?? String(e)).trim()}`, 'the helper needs CAP_MKNOD and a writable /dev');
  }
  return { kind: KIND_DEVNODE, data: { path, major, minor } };
}

/** Removes a device node we made, if it still is that device; else says why it was left alone. */
function releaseDeviceNode(obj: OwnedObject): string | undefined {
  const path = dataString(obj.data, 'path', obj.kind);
  if (!/^\/dev\/tap\d+$/.test(path)) return `left alone: '${path}' is not a /dev/tapN path`;
  const major = dataNumber(obj.data, 'major', obj.kind);
  const minor = dataNumber(obj.data, 'minor', obj.kind);
  // lstat: a symbolic link at that path is not the node we made.
  const st = lstatSync(path, { bigint: true, throwIfNoEntry: false });
  if (!st) return undefined;
  if (!st.isCharacterDevice() || devMajor(st.rdev) !== major || devMinor(st.rdev) !== minor) return `left alone: ${path} is not the device ${major}:${minor} we made`;
  rmSync(path, { force: true });
  return undefined;
}

/**
 * Deletes the macvtap if it still is the one we made (same name, kind,
 * ifindex and marker: klink.ts): a name reused since by someone else's link
 * is left alone, and the returned note says why.
 */
function releaseMacvtap(obj: OwnedObject): string | undefined {
  if (obj.kind === KIND_DEVNODE) return releaseDeviceNode(obj);
  if (obj.kind === KIND_VLAN) {
    releaseVlanLink(obj);
    return undefined;
  }
  if (obj.kind !== OWNED_KIND) throw new SetupError(`the macvtap kernel cannot release objects of kind '${obj.kind}'`);
  return releaseLink(obj, ['macvtap']);
}

function probeMacvtap(req: Partial<EndpointRequest>, host: HostContext): Availability {
  if (!host.netAdmin) return { available: false, reason: 'creating a macvtap needs CAP_NET_ADMIN' };
  const k = kernelHas(FEATURES.macvtap);
  if (k.present === false) return { available: false, reason: `no macvtap in this kernel: ${k.how}` };
  if (req.mode !== undefined || req.params?.macvtapMode !== undefined) {
    try {
      macvtapModeFor({ mode: req.mode ?? 'veb', params: req.params ?? {} });
    } catch (e) {
      return { available: false, reason: (e as Error).message };
    }
  }
  if (!req.dev) return { available: false, reason: 'macvtap needs a parent device (--dev)' };
  const bad = interfaceNameProblem(req.dev);
  if (bad) return { available: false, reason: `parent device name '${req.dev}' ${bad}` };
  if (ifIndex(req.dev) === 0) return { available: false, reason: `parent device '${req.dev}' does not exist in this network namespace` };
  return { available: true, reason: `macvtap on '${req.dev}' (${k.how})` };
}

export const macvtapBackend: KernelBackend = {
  name: 'macvtap',
  yields: 'macvtap',
  probe: probeMacvtap,
  setup: setupMacvtap,
  release: (obj) => releaseMacvtap(obj),
};
