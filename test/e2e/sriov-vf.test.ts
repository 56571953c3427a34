// The sriov kernel implementation end to end on a fake SR-IOV PF whose VF
// netdevs are real veths: claim, apply, release from another process, take
// over from a SIGKILLed owner, refusals, rollback. After every test no claim
// may remain and every VF must look exactly as it did before the test.
import assert from 'node:assert/strict';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, afterEach, before, beforeEach, describe, it } from 'node:test';
import { ExitCode } from '../../src/errors.js';
import { listClaims } from '../../src/state/vf-claims.js';
import { createFakeSriov, type FakeSriov } from '../lib/fake-sysfs.js';
import { killAllWorkers, startWorker, type WorkerJob } from '../lib/sriov-worker.js';

interface VfLook { address: string; up: boolean }

describe('sriov backend on fake VFs (veths)', () => {
  let f: FakeSriov;
  let stateDir: string;
  let baseline: Record<string, VfLook>;
  const look = (netdev: string): VfLook => {
    const d = f.ns.linkDetails(netdev) as { address: string; flags: string[] };
    return { address: d.address, up: d.flags.includes('UP') };
  };
  const looks = (): Record<string, VfLook> => Object.fromEntries(f.vfs.filter((v) => v.netdev).map((v) => [v.netdev!, look(v.netdev!)]));
  const job = (extra: Partial<WorkerJob>): WorkerJob => ({ op: 'setup', sysfsRoot: f.root, stateDir, dev: 'pf0', ...extra });
  /** One-shot worker: its result line and exit code. */
  const run = async (j: WorkerJob): Promise<{ res: Record<string, any> | null; code: number | null; stderr: string }> => {
    const w = startWorker(f.ns, j);
    const res = await w.next();
    return { res, code: await w.exited, stderr: w.stderr() };
  };

  before(() => {
    // VF 0 is bound to vfio-pci (no netdev): never a candidate for a netdev endpoint.
    f = createFakeSriov({ vfs: 3, vfio: [0] });
    stateDir = mkdtempSync(join(tmpdir(), 'qnh-sriov-state-'));
  });
  after(() => {
    killAllWorkers();
    f?.destroy();
    if (stateDir) rmSync(stateDir, { recursive: true, force: true });
  });
  beforeEach(() => { baseline = looks(); });
  afterEach(() => {
    killAllWorkers();
    assert.deepEqual(listClaims(stateDir), [], 'no claim may remain');
    assert.deepEqual(looks(), baseline, 'every VF must be as before');
  });

  it('claims the first VF with a netdev, applies MAC and up; release from another process restores both', async () => {
    const w = startWorker(f.ns, job({ mac: '52:54:00:aa:00:01', hold: true }));
    const r = await w.next();
    assert.ok(r?.ok, w.stderr());
    assert.equal(r.ifname, 'pf0v1');
    assert.equal(r.info.pci, '0000:03:10.1');
    assert.equal(r.info.control, 'netdev');
    assert.deepEqual(look('pf0v1'), { address: '52:54:00:aa:00:01', up: true });
    const claims = listClaims(stateDir);
    assert.equal(claims.length, 1);
    assert.equal(claims[0]!.state, 'held');
    assert.equal(claims[0]!.record!.owner.pid, w.pid);
    assert.deepEqual((claims[0]!.record!.data as { saved: unknown }).saved, { mac: baseline.pf0v1!.address, vlan: 0, qos: 0, up: baseline.pf0v1!.up });
    // The watcher/`down` path: another process releases while the owner still runs.
    const rel = await run({ op: 'release', sysfsRoot: f.root, stateDir, owned: r.owned[0] });
    assert.equal(rel.code, 0, rel.stderr);
    assert.deepEqual(looks(), baseline);
    assert.equal((await run({ op: 'release', sysfsRoot: f.root, stateDir, owned: r.owned[0] })).code, 0, 'release is idempotent');
    w.send('exit');
    assert.equal(await w.exited, 0);
  });

  it('an owner that exits without releasing leaves a stale claim that release (watcher) and gc still undo', async () => {
    const w = startWorker(f.ns, job({ mac: '52:54:00:aa:00:02', hold: true }));
    const r = await w.next();
    assert.ok(r?.ok, w.stderr());
    w.send('exit');
    await w.exited;
    assert.equal(listClaims(stateDir)[0]!.state, 'stale');
    assert.equal(look('pf0v1').address, '52:54:00:aa:00:02');
    assert.equal((await run({ op: 'release', sysfsRoot: f.root, stateDir, owned: r.owned[0] })).code, 0);
    assert.deepEqual(looks(), baseline);
    // The same through gc, which needs nothing but the claim record.
    const w2 = startWorker(f.ns, job({ mac: '52:54:00:aa:00:03', hold: true }));
    assert.ok((await w2.next())?.ok, w2.stderr());
    const live = await run({ op: 'gc', sysfsRoot: f.root, stateDir });
    assert.deepEqual(live.res!.gc, [], 'gc leaves a live claim alone');
    w2.send('exit');
    await w2.exited;
    assert.equal(look('pf0v1').address, '52:54:00:aa:00:03');
    const gc = await run({ op: 'gc', sysfsRoot: f.root, stateDir });
    assert.deepEqual(gc.res!.gc, [{ pci: '0000:03:10.1', result: 'released' }]);
  });

  it('a SIGKILLed owner\'s VF is reclaimed by the next claimant, which first undoes the dead owner\'s settings', async () => {
    const pool = ['0000:03:10.2'];
    const w1 = startWorker(f.ns, job({ vfPool: pool, mac: '52:54:00:bb:00:01', hold: true }));
    const r1 = await w1.next();
    assert.ok(r1?.ok, w1.stderr());
    const lost = await run(job({ vfPool: pool, mac: '52:54:00:bb:00:09' }));
    assert.equal(lost.code, ExitCode.EXHAUSTED, 'a live owner keeps it');
    assert.match(lost.res!.line, new RegExp(`no free VF: .*0000:03:10.2 \\(pid ${w1.pid}`));
    w1.child.kill('SIGKILL');
    await w1.exited;
    assert.equal(look('pf0v2').address, '52:54:00:bb:00:01', 'the dead owner\'s MAC is still on the VF');

    const w2 = startWorker(f.ns, job({ vfPool: pool, mac: '52:54:00:bb:00:02', hold: true }));
    const r2 = await w2.next();
    assert.ok(r2?.ok, w2.stderr());
    assert.equal(r2.info.pci, '0000:03:10.2');
    assert.deepEqual(r2.info.reclaimedFrom, { pid: w1.pid, endpointId: `worker-${w1.pid}` });
    assert.equal(listClaims(stateDir)[0]!.record!.owner.pid, w2.pid);
    // Its saved settings are the original ones, not the dead owner's.
    assert.deepEqual((r2.owned[0].data as { saved: VfLook & object }).saved, { mac: baseline.pf0v2!.address, vlan: 0, qos: 0, up: baseline.pf0v2!.up });
    assert.deepEqual(look('pf0v2'), { address: '52:54:00:bb:00:02', up: true });
    // The dead owner's leftover owned object must not undo the new owner's settings.
    assert.equal((await run({ op: 'release', sysfsRoot: f.root, stateDir, owned: r1.owned[0] })).code, 0);
    assert.deepEqual(look('pf0v2'), { address: '52:54:00:bb:00:02', up: true });
    assert.equal(listClaims(stateDir)[0]!.record!.owner.pid, w2.pid);
    w2.send('release');
    assert.equal(await w2.exited, 0, w2.stderr());
  });

  it('refuses a non-unicast MAC before claiming anything', async () => {
    for (const mac of ['01:00:5e:00:00:01', 'ff:ff:ff:ff:ff:ff', '00:00:00:00:00:00']) {
      const r = await run(job({ mac }));
      assert.equal(r.code, ExitCode.USAGE, `${mac}: ${r.stderr}`);
      assert.match(r.res!.line, /MAC/);
      assert.deepEqual(listClaims(stateDir), []);
    }
  });

  it('refuses a port VLAN and spoof checking on a PF without a VF table; spoofchk off is fine', async () => {
    const v = await run(job({ vlan: 100 }));
    assert.equal(v.code, ExitCode.UNSUPPORTED);
    assert.match(v.res!.line, /port VLAN \(100\)/);
    const s = await run(job({ spoofchk: true }));
    assert.equal(s.code, ExitCode.UNSUPPORTED);
    assert.match(s.res!.line, /spoof checking/);
    assert.deepEqual(listClaims(stateDir), []);
    const w = startWorker(f.ns, job({ spoofchk: false, vlan: 0, hold: true }));
    const r = await w.next();
    assert.ok(r?.ok, w.stderr());
    w.send('release');
    assert.equal(await w.exited, 0);
  });

  it('a failure after the claim rolls back: no claim, no change', async () => {
    // Forcing PF-admin control on a PF that has no VF table fails after the claim was made.
    const r = await run(job({ mac: '52:54:00:cc:00:01', params: { vfControl: 'pf-admin' } }));
    assert.equal(r.code, ExitCode.SETUP_FAILED, r.stderr);
    assert.match(r.res!.line, /lists no vf 1/);
  });

  it('a helper killed mid-setup (after the claim, after saving) leaves a claim the next claimant takes over', async () => {
    const pool = ['0000:03:10.1'];
    for (const step of [1, 2]) {
      const w = startWorker(f.ns, job({ vfPool: pool, mac: '52:54:00:dd:00:01' }), { QEMU_NET_HELPER_FAULT_AFTER_STEP: String(step) });
      assert.equal(await w.next(), null, `step ${step}: killed before any result`);
      await w.exited;
      assert.equal(w.child.signalCode, 'SIGKILL');
      const left = listClaims(stateDir);
      assert.equal(left.length, 1);
      assert.equal(left[0]!.state, 'stale');
      assert.equal(left[0]!.record!.data === undefined, step === 1, 'settings are saved in the record from step 2 on');
      const next = startWorker(f.ns, job({ vfPool: pool, mac: '52:54:00:dd:00:02', hold: true }));
      const r = await next.next();
      assert.ok(r?.ok, next.stderr());
      assert.equal(r.info.reclaimedFrom.pid, w.pid);
      next.send('release');
      assert.equal(await next.exited, 0, next.stderr());
      assert.deepEqual(looks(), baseline, `step ${step}`);
    }
  });

  it('a pool of VF PCI addresses: only those; all taken means ExhaustedError', async () => {
    const held = startWorker(f.ns, job({ vfPool: ['0000:03:10.2', '0000:03:10.1'], hold: true }));
    const r = await held.next();
    assert.ok(r?.ok, held.stderr());
    assert.equal(r.info.pci, '0000:03:10.2', 'pool order wins');
    const second = await run(job({ vfPool: ['0000:03:10.2'] }));
    assert.equal(second.code, ExitCode.EXHAUSTED);
    const vfio = await run(job({ vfPool: ['0000:03:10.0'] }));
    assert.equal(vfio.code, ExitCode.UNSUPPORTED);
    assert.match(vfio.res!.line, /vfio-pci/);
    held.send('release');
    assert.equal(await held.exited, 0);
  });
});
