// Kernel implementation "sriov": hands the guest one SR-IOV virtual function.
// VFs are found in sysfs (the way sriov-cni does: <pf>/device/sriov_numvfs and
// virtfnN links to the VF PCI devices), claimed system-wide through
// src/state/vf-claims.ts, and configured through a VfControl:
//  - 'pf-admin': `ip link set dev PF vf N mac/vlan/spoofchk`, the settings
//    the PF driver enforces in the NIC's switch (trust is read and recorded,
//    never changed). Used when the PF
//    reports a VF table (`ip link show PF` lists `vf N` lines). NOT exercised
//    on the development machine (no SR-IOV hardware): written from iproute2's
//    documented syntax and JSON output, unverified against a real NIC.
//  - 'netdev': the VF netdev's own MAC and up/down state only. A port VLAN,
//    spoof checking and trust are switch features the VF cannot impose on
//    itself, so requests for them are refused rather than silently dropped.
// Whatever is changed is saved first (into the claim record too, so gc can
// restore it after a crash) and restored on release.
import { readdirSync, readFileSync, readlinkSync, realpathSync } from 'node:fs';
import { randomBytes } from 'node:crypto';
import { basename, join } from 'node:path';
import { ConfigError, HelperError, NotFoundError, SetupError, UnsupportedError } from '../../errors.js';
import { interfaceNameProblem } from '../../net/ifname.js';
import { ip, linkShow } from '../../net/ip.js';
import { getMac, getMtu, ifIndex, setMac, setUp } from '../../sys/netdev.js';
import { checkGuestMac as checkMac, formatMac, parseMac } from '../../net/mac.js';
import type { Rollback } from '../../state/rollback.js';
import { ownerOf, isOwnerRef, sameOwner, type OwnerRef } from '../../state/owner.js';
import { claimFirstFree, isPciAddress, listClaims, readClaim, releaseVf, updateClaimData, type ClaimRecord } from '../../state/vf-claims.js';
import type { Availability, EndpointRequest, HostContext, KernelBackend, KernelEndpoint, OwnedObject } from '../types.js';

// ---------------------------------------------------------------- discovery

export interface VfInfo {
  pf: string;
  /** N of the PF's virtfnN link (the VF number `ip link set PF vf N` uses). */
  index: number;
  pci: string;
  /** The VF's netdev; absent when it is bound to vfio-pci or another userspace driver. */
  netdev?: string;
  driver?: string;
}

export interface PfInfo {
  pf: string;
  numVfs: number;
  totalVfs?: number;
  vfs: VfInfo[];
  /** VFs that could not be read (missing/dangling virtfn links, odd names). */
  problems: string[];
}

function readCount(path: string, what: string, pf: string): number | null {
  let text: string;
  try { text = readFileSync(path, 'utf8'); } catch { return null; }
  if (!/^\s*\d{1,5}\s*$/.test(text)) {
    throw new UnsupportedError(`${what} of '${pf}' is unreadable (${JSON.stringify(text.slice(0, 20))})`, `check ${path}`);
  }
  return Number(text.trim());
}

const linkBase = (p: string): string | undefined => { try { return basename(readlinkSync(p)); } catch { return undefined; } };

function vfDetails(pf: string, index: number, dir: string, pci: string): VfInfo {
  const vf: VfInfo = { pf, index, pci };
  let nets: string[] = [];
  try { nets = readdirSync(join(dir, 'net')).sort(); } catch { /* no netdev */ }
  const netdev = nets.find((n) => interfaceNameProblem(n) === null);
  if (netdev) vf.netdev = netdev;
  const driver = linkBase(join(dir, 'driver'));
  if (driver) vf.driver = driver;
  return vf;
}

/** The PF's VFs from sysfs. Throws when `pf` is no netdev or no SR-IOV PF. */
export function readPf(sysfsRoot: string, pf: string): PfInfo {
  const netDir = join(sysfsRoot, 'class/net', pf);
  if (interfaceNameProblem(pf) !== null || !exists(netDir)) {
    throw new NotFoundError(`network device '${pf}' does not exist`, "pass the SR-IOV PF's name with --dev (see 'ip link')");
  }
  const dev = join(netDir, 'device');
  const numVfs = readCount(join(dev, 'sriov_numvfs'), 'sriov_numvfs', pf);
  if (numVfs === null) {
    throw new UnsupportedError(`'${pf}' is not an SR-IOV physical function (no device/sriov_numvfs)`, 'pass the PF (the NIC port itself) with --dev');
  }
  const totalVfs = readCount(join(dev, 'sriov_totalvfs'), 'sriov_totalvfs', pf) ?? undefined;
  const info: PfInfo = { pf, numVfs, vfs: [], problems: [] };
  if (totalVfs !== undefined) info.totalVfs = totalVfs;
  for (let i = 0; i < numVfs; i++) {
    const link = join(dev, `virtfn${i}`);
    const pci = linkBase(link);
    if (!pci || !isPciAddress(pci)) { info.problems.push(`virtfn${i}: ${pci ? `odd target ${pci}` : 'missing'}`); continue; }
    let dir: string;
    try { dir = realpathSync(link); } catch { info.problems.push(`virtfn${i} -> ${pci}: target missing`); continue; }
    info.vfs.push(vfDetails(pf, i, dir, pci));
  }
  return info;
}

function exists(p: string): boolean { try { readdirSync(p); return true; } catch { return false; } }

/** One VF by PCI address (its PF found through the physfn link). */
export function readVf(sysfsRoot: string, pci: string): VfInfo {
  const dir = join(sysfsRoot, 'bus/pci/devices', pci);
  let pfs: string[] = [];
  try { pfs = readdirSync(join(dir, 'physfn', 'net')).sort(); } catch { /* handled below */ }
  if (!exists(dir)) throw new NotFoundError(`PCI device ${pci} does not exist`, "list VFs with 'ip link show <PF>' or lspci");
  if (!pfs[0]) throw new ConfigError(`PCI device ${pci} is not an SR-IOV VF of a PF with a netdev (no physfn/net)`);
  const vf = readPf(sysfsRoot, pfs[0]).vfs.find((v) => v.pci === pci);
  if (!vf) throw new NotFoundError(`VF ${pci} is not among the enabled VFs of '${pfs[0]}'`);
  return vf;
}

// ----------------------------------------------------------------- control

export interface VfSettings {
  mac: string;
  vlan: number;
  qos: number;
  /** Undefined where the control cannot report it. */
  spoofchk?: boolean;
  trust?: boolean;
  /** The VF netdev's administrative up state. */
  up: boolean;
}
export interface VfWanted { mac?: string; vlan?: number; spoofchk?: boolean; up?: boolean }

export interface VfControl {
  readonly kind: 'pf-admin' | 'netdev';
  /** Throws for a request it cannot honour: called before anything is claimed or changed. */
  check(want: VfWanted): void;
  read(vf: VfInfo): VfSettings;
  apply(vf: VfInfo, want: VfWanted): void;
  /**
   * Puts back the saved values of what `changed` names (everything when it is
   * undefined). Only what was changed: re-setting an untouched field can fail
   * on drivers without it (trust on igb, say) and leave the VF stuck claimed.
   */
  restore(vf: VfInfo, saved: VfSettings, changed?: VfWanted): void;
}

interface PfVfEntry { vf: number; address?: string; vlan?: number; qos?: number; vlan_list?: { vlan?: number; qos?: number }[]; spoofchk?: boolean; trust?: boolean }

function netdevUp(name: string | undefined): boolean {
  const l = name ? linkShow(name) : null;
  return !!l?.flags?.includes('UP');
}
function setNetdevUp(name: string | undefined, up: boolean | undefined): void {
  if (name && up !== undefined && ifIndex(name) !== 0) setUp(name, up);
}

function pfVfTable(pf: string): PfVfEntry[] | null {
  const l = linkShow(pf) as (ReturnType<typeof linkShow> & { vfinfo_list?: PfVfEntry[] }) | null;
  if (!l) throw new NotFoundError(`PF '${pf}' is not in this network namespace`, 'run the helper in the namespace that holds the PF');
  return Array.isArray(l.vfinfo_list) && l.vfinfo_list.length ? l.vfinfo_list : null;
}

const pfAdminControl: VfControl = {
  kind: 'pf-admin',
  check() { /* the PF driver decides; ip reports what it refuses */ },
  read(vf) {
    const e = pfVfTable(vf.pf)?.find((x) => x.vf === vf.index);
    if (!e) throw new SetupError(`'${vf.pf}' lists no vf ${vf.index}`);
    const v = e.vlan_list?.[0] ?? e;
    const s: VfSettings = { mac: (e.address ?? '00:00:00:00:00:00').toLowerCase(), vlan: v.vlan ?? 0, qos: v.qos ?? 0, up: netdevUp(vf.netdev) };
    if (e.spoofchk !== undefined) s.spoofchk = e.spoofchk;
    if (e.trust !== undefined) s.trust = e.trust;
    return s;
  },
  apply(vf, want) {
    const a: string[] = [];
    if (want.mac) a.push('mac', want.mac);
    if (want.vlan !== undefined) a.push('vlan', String(want.vlan));
    if (want.spoofchk !== undefined) a.push('spoofchk', want.spoofchk ? 'on' : 'off');
    if (a.length) ip('link', 'set', 'dev', vf.pf, 'vf', String(vf.index), ...a);
    setNetdevUp(vf.netdev, want.up);
  },
  restore(vf, s, changed) {
    if (ifIndex(vf.pf) === 0) return; // PF gone: its VFs and their settings went with it
    const all = changed === undefined;
    const a: string[] = [];
    // An all-zero admin MAC means "none set"; drivers accept it to clear one (unverified here).
    if (all || changed.mac) a.push('mac', s.mac);
    if (all || changed.vlan !== undefined) a.push('vlan', String(s.vlan), 'qos', String(s.qos));
    if ((all || changed.spoofchk !== undefined) && s.spoofchk !== undefined) a.push('spoofchk', s.spoofchk ? 'on' : 'off');
    if (a.length) ip('link', 'set', 'dev', vf.pf, 'vf', String(vf.index), ...a);
    if (all || changed.up !== undefined) setNetdevUp(vf.netdev, s.up);
  },
};

const netdevControl: VfControl = {
  kind: 'netdev',
  check(want) {
    if (want.vlan) {
      throw new UnsupportedError(`a port VLAN (${want.vlan}) needs the PF driver's VF settings, and this PF has no VF table`, 'tag inside the guest, or use a PF whose driver supports `ip link set PF vf N vlan V`');
    }
    if (want.spoofchk) {
      throw new UnsupportedError('spoof checking needs the PF driver\'s VF settings, and this PF has no VF table', 'drop spoofchk from the request or use a PF whose driver supports it');
    }
  },
  read(vf) {
    const l = vf.netdev ? linkShow(vf.netdev) : null;
    if (!l?.address) throw new NotFoundError(`VF netdev '${vf.netdev ?? '?'}' (${vf.pci}) is not in this network namespace`);
    return { mac: l.address.toLowerCase(), vlan: 0, qos: 0, up: !!l.flags?.includes('UP') };
  },
  apply(vf, want) {
    if (want.mac) setMac(vf.netdev!, parseMac(want.mac)!);
    setNetdevUp(vf.netdev, want.up);
  },
  restore(vf, s, changed) {
    if (!vf.netdev || ifIndex(vf.netdev) === 0) return; // VF gone with its settings
    if (!changed || changed.mac) setMac(vf.netdev, parseMac(s.mac)!);
    if (!changed || changed.up !== undefined) setNetdevUp(vf.netdev, s.up);
  },
};

/** pf-admin when the PF reports a VF table, else netdev; `force` from the policy's params. */
function selectControl(pf: string, force?: unknown): VfControl {
  if (force === 'pf-admin') return pfAdminControl;
  if (force === 'netdev') return netdevControl;
  if (force !== undefined) throw new ConfigError(`vfControl must be 'pf-admin' or 'netdev', not ${JSON.stringify(force)}`);
  return pfVfTable(pf) ? pfAdminControl : netdevControl;
}

// ----------------------------------------------------------------- backend

export const SRIOV_OWNED_KIND = 'sriov-vf';

/** What release/gc need, kept in OwnedObject.data and in the claim record. */
export interface SriovOwnedData {
  [k: string]: unknown;
  pci: string;
  pf: string;
  vfIndex: number;
  ifname?: string;
  control: 'pf-admin' | 'netdev';
  saved: VfSettings;
  /** What setup set (and release puts back). */
  applied: VfWanted;
  owner: OwnerRef;
  endpointId: string;
}

/** The guest MAC as text, refused (UsageError) unless unicast and non-zero. */
export function checkGuestMac(mac: Buffer): string {
  return formatMac(checkMac(mac));
}

/** The candidate VFs: `vfPool` entries (PF names or VF PCI addresses), else every VF of `dev`. */
export function resolvePool(req: Partial<EndpointRequest>, sysfsRoot: string): VfInfo[] {
  const entries = req.vfPool?.length ? req.vfPool : req.dev ? [req.dev] : [];
  if (!entries.length) throw new ConfigError('the sriov kernel implementation needs a PF (--dev) or a VF pool');
  const out = new Map<string, VfInfo>();
  for (const e of entries) {
    if (isPciAddress(e)) { const vf = readVf(sysfsRoot, e); out.set(vf.pci, vf); continue; }
    const pf = readPf(sysfsRoot, e);
    if (pf.numVfs === 0) {
      throw new UnsupportedError(`SR-IOV is not enabled on '${e}' (sriov_numvfs is 0)`, `enable VFs: echo N > /sys/class/net/${e}/device/sriov_numvfs`);
    }
    for (const vf of pf.vfs) out.set(vf.pci, vf);
  }
  const vfs = [...out.values()];
  if (!vfs.some((v) => v.netdev)) {
    const drivers = [...new Set(vfs.map((v) => v.driver ?? 'no driver'))].join(', ');
    throw new UnsupportedError(`none of the ${vfs.length} candidate VFs has a netdev (driver: ${drivers})`, 'VFs bound to vfio-pci are for PCI passthrough (<hostdev>); bind them to the NIC\'s VF driver');
  }
  return vfs.filter((v) => v.netdev);
}

function claimant(req: EndpointRequest): { owner: OwnerRef; endpointId: string } {
  // The claim must follow QEMU's life, not the helper's (which exits at once).
  // Callers pass it in params.ownerPid; QEMU is the helper's parent otherwise.
  const pid = typeof req.params.ownerPid === 'number' ? req.params.ownerPid : process.ppid;
  let owner: OwnerRef;
  try { owner = ownerOf(pid); } catch (e) { throw new ConfigError(`cannot record VF owner pid ${pid}: ${(e as Error).message}`); }
  const endpointId = typeof req.params.endpointId === 'string' ? req.params.endpointId : `${pid}-${randomBytes(4).toString('hex')}`;
  return { owner, endpointId };
}

function ownedData(v: unknown): SriovOwnedData | null {
  const d = v as SriovOwnedData | undefined;
  if (!d || typeof d !== 'object' || !isPciAddress(String(d.pci)) || typeof d.pf !== 'string' || !Number.isInteger(d.vfIndex)
    || (d.control !== 'pf-admin' && d.control !== 'netdev') || typeof d.saved?.mac !== 'string' || !parseMac(d.saved.mac)
    || !isOwnerRef(d.owner) || typeof d.endpointId !== 'string') return null;
  return d;
}

/**
 * Puts a VF back as recorded, but only a VF that sysfs shows as the record
 * says: `pf` an SR-IOV PF whose virtfn<vfIndex> is `pci`. The netdev is the
 * one sysfs lists for that VF now (it may have been renamed), never a name
 * from the record: a record must not be able to change another link's MAC.
 * Returns why nothing was restored, if so.
 */
function restoreRecorded(d: SriovOwnedData, sysfsRoot: string): string | undefined {
  let vf: VfInfo | undefined;
  try {
    vf = readPf(sysfsRoot, d.pf).vfs.find((v) => v.index === d.vfIndex);
  } catch (e) {
    if (e instanceof HelperError) return `left alone: ${e.message}`;
    throw e;
  }
  if (!vf || vf.pci !== d.pci) return `left alone: sysfs shows no VF ${d.vfIndex} of '${d.pf}' at ${d.pci}`;
  const applied = typeof d.applied === 'object' && d.applied !== null ? d.applied : undefined;
  (d.control === 'pf-admin' ? pfAdminControl : netdevControl).restore(vf, d.saved, applied);
  return undefined;
}

/**
 * Restores from a claim record (read under the VF's flock): its saved data,
 * written by setup before anything changed, must name the same VF, endpoint
 * and owner as the claim itself.
 */
function restoreClaimed(rec: ClaimRecord, sysfsRoot: string): string | undefined {
  if (rec.data === undefined) return undefined; // the claimant changed nothing yet
  const d = ownedData(rec.data);
  if (!d || d.pci !== rec.pci || d.endpointId !== rec.endpointId || !sameOwner(d.owner, rec.owner)) {
    return `left alone: the saved settings in the claim on VF ${rec.pci} do not belong to that claim`;
  }
  return restoreRecorded(d, sysfsRoot);
}

export const sriovBackend: KernelBackend = {
  name: 'sriov',
  yields: 'netdev',

  probe(req: Partial<EndpointRequest>, host: HostContext): Availability {
    try {
      const vfs = resolvePool(req, host.sysfsRoot);
      const pfs = [...new Set(vfs.map((v) => v.pf))];
      const want: VfWanted = {};
      if (req.vlan !== undefined) want.vlan = req.vlan;
      if (req.spoofchk !== undefined) want.spoofchk = req.spoofchk;
      if (want.vlan || want.spoofchk) for (const pf of pfs) selectControl(pf, req.params?.vfControl).check(want);
      const free = vfs.filter((v) => { const c = readClaim(host.stateDir, v.pci); return !c || c.state === 'stale' || c.state === 'corrupt'; });
      if (!free.length) return { available: false, reason: `no free VF: all ${vfs.length} VFs of ${pfs.join(', ')} are claimed` };
      return { available: true, reason: `${free.length} of ${vfs.length} VFs free on ${pfs.join(', ')}` };
    } catch (e) {
      if (e instanceof HelperError) return { available: false, reason: e.message };
      throw e;
    }
  },

  setup(req: EndpointRequest, host: HostContext, rb: Rollback): KernelEndpoint {
    const mac = req.mac ? checkGuestMac(req.mac) : undefined;
    const want: VfWanted = { up: true };
    if (mac) want.mac = mac;
    if (req.vlan !== undefined) want.vlan = req.vlan;
    if (req.spoofchk !== undefined) want.spoofchk = req.spoofchk;
    const controls = new Map<string, VfControl>();
    let refusal: unknown;
    // Only VFs whose PF can honour the whole request are candidates.
    const vfs = resolvePool(req, host.sysfsRoot).filter((v) => {
      try {
        const ctl = controls.get(v.pf) ?? selectControl(v.pf, req.params.vfControl);
        ctl.check(want);
        controls.set(v.pf, ctl);
        return true;
      } catch (e) { refusal = e; return false; }
    });
    if (!vfs.length) throw refusal;
    const who = claimant(req);
    const got = claimFirstFree(host.stateDir, vfs.map((v) => v.pci), who, { onStale: (r) => { restoreClaimed(r, host.sysfsRoot); } });
    const pci = got.record.pci;
    if (!got.again) rb.add(`release the claim on VF ${pci}`, () => { releaseVf(host.stateDir, pci, who); });
    const vf = vfs.find((v) => v.pci === pci)!;
    const ctl = controls.get(vf.pf)!;
    // Re-running setup for the same endpoint keeps the first saved settings.
    const before = got.again ? ownedData(got.record.data) : null;
    const data: SriovOwnedData = before ?? {
      pci, pf: vf.pf, vfIndex: vf.index, ifname: vf.netdev!, control: ctl.kind, saved: ctl.read(vf), applied: want, ...who,
    };
    // Saved into the record before anything changes, so gc can undo a crash.
    if (!before) updateClaimData(host.stateDir, pci, who, data);
    const owned: OwnedObject = { kind: SRIOV_OWNED_KIND, data };
    // Journaled with the undo, so a helper killed from here on leaves gc a way back.
    rb.add(`restore the settings of VF ${pci}`, () => ctl.restore(vf, data.saved, data.applied), { backend: 'sriov', obj: owned });
    try {
      ctl.apply(vf, want);
    } catch (e) {
      if (e instanceof HelperError) throw e;
      throw new SetupError(`configuring VF ${pci} (${vf.netdev}) failed: ${e instanceof Error ? e.message : String(e)}`);
    }
    const info: Record<string, unknown> = { pf: vf.pf, vf: vf.index, pci, driver: vf.driver, control: ctl.kind, endpointId: who.endpointId, ownerPid: who.owner.pid };
    if (got.previous) info.reclaimedFrom = { pid: got.previous.owner.pid, endpointId: got.previous.endpointId };
    return {
      kernel: 'sriov', ifname: vf.netdev!, fds: [], vnetHdr: false, mac: mac ?? formatMac(getMac(vf.netdev!)), mtu: getMtu(vf.netdev!),
      owned: [owned], info,
    };
  },

  release(obj: OwnedObject, host: HostContext): string | undefined {
    const d = ownedData(obj.data);
    if (obj.kind !== SRIOV_OWNED_KIND || !d) throw new ConfigError(`not an sriov owned object: ${JSON.stringify(obj).slice(0, 200)}`);
    // Under the VF's flock, and only while the claim is still this endpoint's:
    // once someone else holds the VF, its settings are theirs. What is put
    // back comes from the claim, checked against sysfs, not from this record.
    let note: string | undefined;
    const r = releaseVf(host.stateDir, d.pci, { owner: d.owner, endpointId: d.endpointId }, (claim) => { note = restoreClaimed(claim, host.sysfsRoot); });
    if (r === 'busy') throw new SetupError(`VF ${d.pci}: its claim lock stayed busy; try again`);
    if (r === 'not-owner') return `left alone: the claim on VF ${d.pci} is not endpoint ${d.endpointId}'s`;
    return note;
  },
};

/**
 * For `gc`: drops every VF claim whose owner is gone, first putting back the
 * settings its record saved. Live, invisible and foreign claims are left alone.
 */
export function gcStaleVfClaims(host: HostContext): { pci: string; result: string }[] {
  // onlyStale is checked again under the flock: a claim taken since the
  // listing (even over a corrupt record) is live and stays.
  return listClaims(host.stateDir).filter((c) => c.state === 'stale' || c.state === 'corrupt').map((c) => {
    try {
      let note: string | undefined;
      const result = releaseVf(host.stateDir, c.pci, { onlyStale: true }, (r) => { note = restoreClaimed(r, host.sysfsRoot); });
      return { pci: c.pci, result: note ? `${result}; settings ${note}` : result };
    } catch (e) {
      return { pci: c.pci, result: `failed: ${e instanceof Error ? e.message : String(e)}` };
    }
  });
}
