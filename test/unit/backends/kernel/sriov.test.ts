// VF discovery from a sysfs root, on fake trees (files only, no netdevs):
// well-formed ones, broken ones, and what probe says about each.
import assert from 'node:assert/strict';
import { mkdirSync, mkdtempSync, rmSync, symlinkSync, unlinkSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterEach, describe, it } from 'node:test';
import { checkGuestMac, readPf, readVf, resolvePool, sriovBackend } from '../../../../src/backends/kernel/sriov.js';
import type { HostContext } from '../../../../src/backends/types.js';
import { ConfigError, ExitCode, NotFoundError, UnsupportedError, UsageError } from '../../../../src/errors.js';
import { selfOwner } from '../../../../src/state/owner.js';
import { tryClaimVf } from '../../../../src/state/vf-claims.js';
import { buildFakeSysfs, type FakeTree } from '../../../lib/fake-sysfs.js';

const cleanup: (() => void)[] = [];
afterEach(() => { for (const f of cleanup.splice(0)) f(); });

function tree(opts: Parameters<typeof buildFakeSysfs>[0]): FakeTree {
  const t = buildFakeSysfs(opts);
  cleanup.push(t.remove);
  return t;
}
function host(t: FakeTree): HostContext {
  const stateDir = mkdtempSync(join(tmpdir(), 'qnh-state-'));
  cleanup.push(() => rmSync(stateDir, { recursive: true, force: true }));
  return { bin: { nft: null, dnsmasq: null }, trusted: true, switchControl: '/nonexistent', sysfsRoot: t.root, netSysfsRoot: '/sys', stateDir, tunDevice: '', vhostNetDevice: '', netAdmin: true };
}

describe('SR-IOV discovery', () => {
  it('finds every VF: index, PCI address, netdev, driver; a vfio-bound VF has no netdev', () => {
    const t = tree({ vfs: 4, vfio: [2] });
    const pf = readPf(t.root, 'pf0');
    assert.equal(pf.numVfs, 4);
    assert.equal(pf.totalVfs, 8);
    assert.deepEqual(pf.problems, []);
    assert.deepEqual(pf.vfs, [
      { pf: 'pf0', index: 0, pci: '0000:03:10.0', netdev: 'pf0v0', driver: 'fakevf' },
      { pf: 'pf0', index: 1, pci: '0000:03:10.1', netdev: 'pf0v1', driver: 'fakevf' },
      { pf: 'pf0', index: 2, pci: '0000:03:10.2', driver: 'vfio-pci' },
      { pf: 'pf0', index: 3, pci: '0000:03:10.3', netdev: 'pf0v3', driver: 'fakevf' },
    ]);
    // Candidates for a netdev endpoint skip the vfio-bound one.
    assert.deepEqual(resolvePool({ dev: 'pf0' }, t.root).map((v) => v.index), [0, 1, 3]);
  });

  it('VF PCI addresses past function 7 roll over to the next device', () => {
    const t = tree({ vfs: 10 });
    assert.equal(readPf(t.root, 'pf0').vfs[9]!.pci, '0000:03:11.1');
  });

  it('a VF by PCI address finds its PF through physfn; a pool may mix addresses', () => {
    const t = tree({ vfs: 4 });
    assert.deepEqual(readVf(t.root, '0000:03:10.3'), { pf: 'pf0', index: 3, pci: '0000:03:10.3', netdev: 'pf0v3', driver: 'fakevf' });
    assert.deepEqual(resolvePool({ vfPool: ['0000:03:10.2', '0000:03:10.0', '0000:03:10.2'] }, t.root).map((v) => v.pci), ['0000:03:10.2', '0000:03:10.0']);
    assert.throws(() => readVf(t.root, '0000:03:1f.0'), NotFoundError);
    assert.throws(() => readVf(t.root, t.pfPci), ConfigError, 'a PF is not a VF');
  });

  it('skips missing, dangling and odd virtfn links and says which', () => {
    const t = tree({ vfs: 4 });
    unlinkSync(t.path(`bus/pci/devices/${t.pfPci}/virtfn1`));
    rmSync(t.path('bus/pci/devices/0000:03:10.2'), { recursive: true });
    unlinkSync(t.path(`bus/pci/devices/${t.pfPci}/virtfn3`));
    symlinkSync('../not-a-pci-address', t.path(`bus/pci/devices/${t.pfPci}/virtfn3`));
    const pf = readPf(t.root, 'pf0');
    assert.deepEqual(pf.vfs.map((v) => v.index), [0]);
    assert.equal(pf.problems.length, 3);
    assert.match(pf.problems[0]!, /virtfn1: missing/);
    assert.match(pf.problems[1]!, /virtfn2 -> 0000:03:10.2: target missing/);
    assert.match(pf.problems[2]!, /virtfn3: odd target/);
  });

  it('numvfs 0: SR-IOV not enabled, with the fix in the hint', () => {
    const t = tree({ vfs: 0 });
    assert.equal(readPf(t.root, 'pf0').numVfs, 0);
    assert.throws(() => resolvePool({ dev: 'pf0' }, t.root), (e: unknown) => e instanceof UnsupportedError && /not enabled/.test(e.message) && /sriov_numvfs/.test(e.hint ?? ''));
    const p = sriovBackend.probe({ dev: 'pf0' }, host(t));
    assert.equal(p.available, false);
    assert.match(p.reason, /not enabled/);
  });

  it('garbage in sriov_numvfs is reported, not guessed at', () => {
    const t = tree({ vfs: 2 });
    for (const junk of ['abc\n', '', '-1', '2 3', '99999999']) {
      writeFileSync(t.path(`bus/pci/devices/${t.pfPci}/sriov_numvfs`), junk);
      assert.throws(() => readPf(t.root, 'pf0'), (e: unknown) => e instanceof UnsupportedError && /unreadable/.test(e.message), junk);
    }
    assert.match(sriovBackend.probe({ dev: 'pf0' }, host(t)).reason, /sriov_numvfs of 'pf0' is unreadable/);
  });

  it('no such netdev, a netdev that is no PF, a bad name, no PF at all', () => {
    const t = tree({ vfs: 2 });
    mkdirSync(t.path('class/net/eth9/device'), { recursive: true });
    assert.throws(() => readPf(t.root, 'nope0'), NotFoundError);
    assert.throws(() => readPf(t.root, '../../x'), NotFoundError);
    assert.throws(() => readPf(t.root, 'eth9'), (e: unknown) => e instanceof UnsupportedError && /not an SR-IOV physical function/.test(e.message));
    assert.throws(() => resolvePool({}, t.root), ConfigError);
    const h = host(t);
    assert.deepEqual(sriovBackend.probe({ dev: 'nope0' }, h), { available: false, reason: "network device 'nope0' does not exist" });
    assert.equal(sriovBackend.probe({ dev: 'eth9' }, h).available, false);
  });

  it('every VF bound to vfio-pci: unsupported for a netdev endpoint, naming the driver', () => {
    const t = tree({ vfs: 2, vfio: [0, 1] });
    assert.throws(() => resolvePool({ dev: 'pf0' }, t.root), (e: unknown) => e instanceof UnsupportedError && /vfio-pci/.test(e.message));
  });

  it('probe counts free VFs; claimed ones by live owners are not free, stale ones are', () => {
    const t = tree({ vfs: 3 });
    const h = host(t);
    assert.deepEqual(sriovBackend.probe({ dev: 'pf0' }, h), { available: true, reason: '3 of 3 VFs free on pf0' });
    const me = selfOwner();
    for (const v of t.vfs.slice(0, 2)) assert.ok(tryClaimVf(h.stateDir, v.pci, { owner: me, endpointId: `e${v.index}` }).ok);
    assert.deepEqual(sriovBackend.probe({ dev: 'pf0' }, h), { available: true, reason: '1 of 3 VFs free on pf0' });
    assert.ok(tryClaimVf(h.stateDir, t.vfs[2]!.pci, { owner: { pid: me.pid, startTime: '1' }, endpointId: 'ghost' }).ok);
    assert.equal(sriovBackend.probe({ dev: 'pf0' }, h).available, true, 'a stale claim does not block');
    assert.ok(tryClaimVf(h.stateDir, t.vfs[2]!.pci, { owner: me, endpointId: 'e2' }).ok);
    assert.deepEqual(sriovBackend.probe({ dev: 'pf0' }, h), { available: false, reason: 'no free VF: all 3 VFs of pf0 are claimed' });
  });
});

describe('guest MAC check', () => {
  it('accepts unicast, refuses multicast, broadcast and all-zero with a usage error', () => {
    assert.equal(checkGuestMac(Buffer.from([0x52, 0x54, 0, 1, 2, 3])), '52:54:00:01:02:03');
    for (const m of [[1, 0, 0x5e, 0, 0, 1], [0xff, 0xff, 0xff, 0xff, 0xff, 0xff], [0x33, 0x33, 0, 0, 0, 1], [0, 0, 0, 0, 0, 0], [2, 0, 0]]) {
      assert.throws(() => checkGuestMac(Buffer.from(m)), (e: unknown) => e instanceof UsageError && e.exitCode === ExitCode.USAGE, String(m));
    }
  });
});
