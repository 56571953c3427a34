// A fake sysfs with one SR-IOV PF and its VFs, laid out like the real one
// (class/net/<pf> is a link into the PF's PCI device directory, virtfnN and
// physfn are relative links between PCI devices), so discovery code runs
// unchanged against it through QEMU_NET_HELPER_SYSFS. This machine has no
// SR-IOV NIC: with `createFakeSriov` the VF netdevs are real veths in a
// throwaway namespace, their other ends in a second one (the "wire").
import { mkdirSync, mkdtempSync, rmSync, symlinkSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { NetNs } from './netns.js';

export interface FakeTreeOptions {
  pf?: string;
  vfs: number;
  /** sriov_totalvfs; default max(vfs, 8). */
  totalVfs?: number;
  /** PCI bus of PF and VFs (two hex digits); default '03'. */
  bus?: string;
  /** VF indexes bound to vfio-pci: no netdev. */
  vfio?: number[];
}

export interface FakeVf { index: number; pci: string; netdev?: string; driver: string }

export interface FakeTree {
  root: string;
  pf: string;
  pfPci: string;
  vfs: FakeVf[];
  /** Path of a file relative to the root, for tests that break the tree. */
  path(rel: string): string;
  remove(): void;
}

/** Real VFs sit at device 0x10+ of the PF's bus, eight functions per device. */
export function vfPci(bus: string, k: number): string {
  return `0000:${bus}:${(0x10 + (k >> 3)).toString(16)}.${k & 7}`;
}

/** The sysfs files only (no netdevs): enough for discovery and claim tests. */
export function buildFakeSysfs(opts: FakeTreeOptions): FakeTree {
  const pf = opts.pf ?? 'pf0';
  const bus = opts.bus ?? '03';
  const root = mkdtempSync(join(tmpdir(), 'qnh-sysfs-'));
  const devs = join(root, 'bus/pci/devices');
  const pfPci = `0000:${bus}:00.0`;
  const pfDir = join(devs, pfPci);
  mkdirSync(join(pfDir, 'net', pf), { recursive: true });
  mkdirSync(join(root, 'class/net'), { recursive: true });
  for (const d of ['fakenic', 'fakevf', 'vfio-pci']) mkdirSync(join(root, 'bus/pci/drivers', d), { recursive: true });
  symlinkSync('../../../bus/pci/drivers/fakenic', join(pfDir, 'driver'));
  symlinkSync(`../../bus/pci/devices/${pfPci}/net/${pf}`, join(root, 'class/net', pf));
  symlinkSync(`../../../${pfPci}`, join(pfDir, 'net', pf, 'device'));
  writeFileSync(join(pfDir, 'sriov_numvfs'), `${opts.vfs}\n`);
  writeFileSync(join(pfDir, 'sriov_totalvfs'), `${opts.totalVfs ?? Math.max(opts.vfs, 8)}\n`);
  const vfs: FakeVf[] = [];
  for (let k = 0; k < opts.vfs; k++) {
    const pci = vfPci(bus, k);
    const dir = join(devs, pci);
    mkdirSync(dir, { recursive: true });
    symlinkSync(`../${pci}`, join(pfDir, `virtfn${k}`));
    symlinkSync(`../${pfPci}`, join(dir, 'physfn'));
    const vfio = opts.vfio?.includes(k) ?? false;
    const driver = vfio ? 'vfio-pci' : 'fakevf';
    symlinkSync(`../../../../bus/pci/drivers/${driver}`, join(dir, 'driver'));
    const vf: FakeVf = { index: k, pci, driver };
    if (!vfio) {
      vf.netdev = `${pf}v${k}`;
      mkdirSync(join(dir, 'net', vf.netdev), { recursive: true });
      symlinkSync(`../../bus/pci/devices/${pci}/net/${vf.netdev}`, join(root, 'class/net', vf.netdev));
    }
    vfs.push(vf);
  }
  return {
    root, pf, pfPci, vfs,
    path: (rel) => join(root, rel),
    remove: () => rmSync(root, { recursive: true, force: true }),
  };
}

export interface FakeSriov extends FakeTree {
  /** Where the PF and VF netdevs live (run the helper here). */
  ns: NetNs;
  /** The other ends of the veths. */
  wire: NetNs;
  /** Removes the tree, the veths and any namespace made here; safe to call twice. */
  destroy(): void;
}

/**
 * The fake tree plus real netdevs: the PF and every VF with a netdev become
 * veths in `ns` (peers in `wire`). Namespaces not passed in are created and
 * destroyed here. Everything made so far is undone if building fails.
 */
export function createFakeSriov(opts: FakeTreeOptions & { ns?: NetNs; wire?: NetNs }): FakeSriov {
  const tree = buildFakeSysfs(opts);
  const made: NetNs[] = [];
  const links: string[] = [];
  let ns: NetNs | undefined;
  let wire: NetNs | undefined;
  const destroy = (): void => {
    for (const l of links) {
      try { ns?.ip('link', 'del', 'dev', l); } catch { /* gone */ }
    }
    links.length = 0;
    for (const n of made.splice(0)) n.destroy();
    tree.remove();
  };
  try {
    const own = (prefix: string): NetNs => { const n = NetNs.create(prefix); made.push(n); return n; };
    ns = opts.ns ?? own('qnhsr');
    wire = opts.wire ?? own('qnhwr');
    const pair = (name: string): void => {
      // Made inside `ns`, the peer sent straight into the wire namespace.
      ns!.ip('link', 'add', name, 'type', 'veth', 'peer', 'name', `w${name}`, 'netns', wire!.name);
      links.push(name);
    };
    pair(tree.pf);
    ns.ip('link', 'set', tree.pf, 'up');
    wire.ip('link', 'set', `w${tree.pf}`, 'up');
    for (const vf of tree.vfs) if (vf.netdev) pair(vf.netdev);
  } catch (e) {
    destroy();
    throw e;
  }
  return { ...tree, ns, wire, destroy };
}
