// The CNI plugin's "vf" transport on a fake SR-IOV PF (test/lib/fake-sysfs.ts:
// sysfs files plus real veths as VF netdevs): the VF is claimed in the same
// claim files the helper uses, moved into the sandbox with the result's pciID,
// never handed to the helper while a pod holds it (nor the other way round),
// code 109 when the pool is exhausted, and back as it was after DEL.
import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, afterEach, before, beforeEach, describe, it } from 'node:test';
import { listEndpoints } from '../../src/state/endpoints.js';
import { listClaims } from '../../src/state/vf-claims.js';
import { cni, type CniCall } from '../lib/cni.js';
import { createFakeSriov, type FakeSriov } from '../lib/fake-sysfs.js';
import { NetNs } from '../lib/netns.js';
import { BIN } from '../lib/paths.js';

describe('CNI vf transport on a fake SR-IOV PF', () => {
  let f: FakeSriov;
  let stateDir: string;
  let baseline: Record<string, string>;
  const sandboxes: NetNs[] = [];
  const env = (): Record<string, string> => ({ QEMU_NET_HELPER_STATE_DIR: stateDir, QEMU_NET_HELPER_SYSFS: f.root });
  const conf = { cniVersion: '1.1.0', name: 'vfnet', type: 'qemu-net-helper', mode: 'passthrough', transport: 'vf', vfPool: ['pf0'], mac: '52:54:00:77:00:01' };
  const call = (command: string, s: NetNs, containerId: string): CniCall => ({ command, containerId, netns: `/run/netns/${s.name}`, ifname: 'net1', extraEnv: env() });
  const looks = (): Record<string, string> => Object.fromEntries(f.vfs.map((v) => [v.netdev!, String((f.ns.linkDetails(v.netdev!) as { address: string }).address)]));
  const helper = (args: string[]): { code: number | null; json: any; err: string } => {
    const r = spawnSync('ip', ['netns', 'exec', f.ns.name, process.execPath, BIN, ...args], { env: { ...process.env, ...env() }, encoding: 'utf8' });
    let json: any = null;
    try { json = JSON.parse(r.stdout); } catch { /* not JSON */ }
    return { code: r.status, json, err: r.stderr };
  };

  before(() => {
    f = createFakeSriov({ vfs: 2 });
    stateDir = mkdtempSync(join(tmpdir(), 'qnh-cni-vf-'));
  });
  after(() => {
    for (const s of sandboxes) s.destroy();
    f?.destroy();
    if (stateDir) rmSync(stateDir, { recursive: true, force: true });
  });
  beforeEach(() => { baseline = looks(); });
  afterEach(() => {
    assert.deepEqual(listClaims(stateDir), [], 'no VF claim may remain');
    assert.deepEqual(listEndpoints(stateDir), [], 'no record may remain');
    assert.deepEqual(looks(), baseline, 'every VF is back under its name with its MAC');
  });

  it('ADD claims a VF and moves it into the sandbox (pciID in the result); the helper gets the other one; exhausted is 109; DEL (twice) gives it back', () => {
    const s1 = NetNs.create('qnhcV');
    const s2 = NetNs.create('qnhcV');
    sandboxes.push(s1, s2);
    const add = cni(f.ns, call('ADD', s1, 'pod1'), conf);
    assert.equal(add.status, 0, add.stdout + add.stderr);
    const iface = add.json.interfaces.at(-1);
    assert.equal(iface.name, 'net1');
    assert.equal(iface.mac, '52:54:00:77:00:01');
    assert.equal(iface.sandbox, `/run/netns/${s1.name}`);
    const vf = f.vfs.find((v) => v.pci === iface.pciID);
    assert.ok(vf, `pciID ${iface.pciID} is one of the fake VFs`);
    assert.ok(!f.ns.links().includes(vf.netdev!), 'the VF left the host namespace');
    assert.equal((s1.linkDetails('net1') as { address: string }).address, '52:54:00:77:00:01');
    const claims = listClaims(stateDir);
    assert.equal(claims.length, 1);
    assert.equal(claims[0]!.pci, vf.pci);
    assert.equal(claims[0]!.state, 'held');

    // The helper, asked for a VF of the same PF, gets the other one.
    const up = helper(['up', '--mode=passthrough', '--dev=pf0', '--id=vm1', '--json']);
    assert.equal(up.code, 0, up.err + JSON.stringify(up.json));
    const helperPci = String(up.json.endpoint?.info?.pci ?? '');
    assert.ok(helperPci && helperPci !== vf.pci, `the helper took ${helperPci}, not the pod's ${vf.pci}`);

    // Both VFs are taken now: CNI ADD is refused with 109 and touches nothing.
    const none = cni(f.ns, call('ADD', s2, 'pod2'), conf);
    assert.equal(none.status, 1);
    assert.equal(none.json.code, 109, none.stdout);
    assert.match(none.json.msg, /no free VF/);
    assert.deepEqual(s2.links(), ['lo']);
    assert.equal(listEndpoints(stateDir).length, 2, 'only the two live attachments are recorded');

    const status = cni(f.ns, { command: 'STATUS', extraEnv: env() }, conf);
    assert.equal(status.json?.code, 50, 'STATUS says not available while the pool is exhausted');

    assert.equal(helper(['down', 'vm1']).code, 0);
    for (const round of [1, 2]) {
      const del = cni(f.ns, call('DEL', s1, 'pod1'), conf);
      assert.equal(del.status, 0, `DEL ${round}: ${del.stdout}`);
    }
    assert.deepEqual(s1.links(), ['lo']);
  });
  it('crash safety: ADD SIGKILLed after each setup step, then DEL: the VF is back, restored and unclaimed', () => {
    for (let step = 1; ; step++) {
      assert.ok(step < 10, 'ADD should finish within 9 steps');
      const s = NetNs.create('qnhcV');
      sandboxes.push(s);
      const c = { ...call('ADD', s, `crash${step}`), extraEnv: { ...env(), QEMU_NET_HELPER_FAULT_AFTER_STEP: String(step) } };
      const add = cni(f.ns, c, conf);
      assert.ok(add.status === 0 || add.status === null, `step ${step}: ${add.status} ${add.stdout}`);
      const del = cni(f.ns, call('DEL', s, `crash${step}`), conf);
      assert.equal(del.status, 0, `step ${step}: DEL ${del.stdout}`);
      assert.deepEqual(listClaims(stateDir), [], `step ${step}: no claim left`);
      assert.deepEqual(looks(), baseline, `step ${step}: VFs as before`);
      s.destroy();
      if (add.status === 0) break;
    }
  });
  it("an ADD killed right after its claim, then the helper's gc, then DEL: the claim is still released", () => {
    const s = NetNs.create('qnhcV');
    sandboxes.push(s);
    const add = cni(f.ns, { ...call('ADD', s, 'gc1'), extraEnv: { ...env(), QEMU_NET_HELPER_FAULT_AFTER_STEP: '1' } }, conf);
    assert.equal(add.status, null, 'killed');
    assert.equal(listClaims(stateDir).length, 1);
    const gc = helper(['gc']);
    assert.equal(gc.code, 0, gc.err);
    assert.deepEqual(listEndpoints(stateDir), [], "the helper's gc released the interrupted record");
    assert.equal(listClaims(stateDir).length, 1, 'the claim (pid 1 owner, no record) survives gc');
    assert.equal(cni(f.ns, call('DEL', s, 'gc1'), conf).status, 0);
  });
});
