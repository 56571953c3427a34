// up / down / list / gc through the real CLI, QEMU opening what `up` made,
// and crash safety: the process killed after each setup step, then gc.
import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import { existsSync, mkdtempSync, readdirSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, before, describe, it } from 'node:test';
import { NetNs } from '../lib/netns.js';
import { BIN } from '../lib/paths.js';
import { haveQemu, startQemu, tapsHeldBy } from '../lib/qemu.js';

describe('endpoint lifecycle (up, down, list, gc)', () => {
  let ns: NetNs;
  let dir: string;
  let env: NodeJS.ProcessEnv;
  const cli = (args: string[], extraEnv: NodeJS.ProcessEnv = {}): { code: number | null; signal: NodeJS.Signals | null; out: string; err: string; json: any } => {
    const r = spawnSync('ip', ['netns', 'exec', ns.name, process.execPath, BIN, ...args], { env: { ...env, ...extraEnv }, encoding: 'utf8' });
    let json: unknown = null;
    try { json = JSON.parse(r.stdout); } catch { /* not JSON */ }
    return { code: r.status, signal: r.signal, out: r.stdout, err: r.stderr, json };
  };
  before(() => {
    ns = NetNs.create();
    ns.addBridge('br0', undefined, 1450);
    dir = mkdtempSync(join(tmpdir(), 'qnh-life-'));
    env = { ...process.env, QEMU_NET_HELPER_STATE_DIR: join(dir, 'state'), QEMU_NET_HELPER_CONFIG: join(dir, 'config') };
  });
  after(() => {
    ns.destroy();
    rmSync(dir, { recursive: true, force: true });
  });
  const taps = (): string[] => ns.links().filter((l) => l !== 'lo' && l !== 'br0');
  const records = (): string[] => (existsSync(join(dir, 'state/endpoints')) ? readdirSync(join(dir, 'state/endpoints')) : []);

  it('up makes a persistent tap and prints QEMU arguments that work; down removes it, twice', async () => {
    const r = cli(['up', '--mode=bridge', '--dev=br0', '--mac=52:54:00:00:00:07', '--id=vm7', '--json']);
    assert.equal(r.code, 0, r.err);
    assert.equal(r.json.endpoint.id, 'vm7');
    assert.equal(r.json.endpoint.kernel, 'bridge');
    assert.equal(r.json.endpoint.mtu, 1450);
    assert.equal(r.json.endpoint.mac, '52:54:00:00:00:07');
    const tap = r.json.endpoint.ifname as string;
    assert.deepEqual(taps(), [tap]);
    assert.equal((ns.linkDetails(tap) as { master: string }).master, 'br0');
    assert.match(r.json.qemu.netdev, new RegExp(`^tap,id=vm7,ifname=${tap},script=no,downscript=no$`));

    const l = cli(['list', '--json']);
    assert.equal(l.code, 0, l.err);
    assert.equal(l.json.endpoints.length, 1);
    assert.equal(l.json.endpoints[0].owner, null);

    if (haveQemu()) {
      // The arguments `up` printed really attach QEMU to the tap.
      const q = await startQemu(ns, ['-netdev', r.json.qemu.netdev as string], env);
      assert.deepEqual(tapsHeldBy(q.proc.pid!), [tap]);
      await q.quit();
      assert.deepEqual(taps(), [tap], 'a persistent tap survives QEMU');
    }

    const d = cli(['down', 'vm7', '--json']);
    assert.equal(d.code, 0, d.err);
    assert.equal(d.json.alreadyGone, false);
    assert.deepEqual(taps(), []);
    assert.deepEqual(records(), []);
    const d2 = cli(['down', 'vm7', '--json']);
    assert.equal(d2.code, 0, d2.err);
    assert.equal(d2.json.alreadyGone, true);
  });

  it('a taken id and bad input are refused with JSON errors and leave nothing', () => {
    assert.equal(cli(['up', '--mode=bridge', '--dev=br0', '--id=dup']).code, 0);
    const again = cli(['up', '--mode=bridge', '--dev=br0', '--id=dup', '--json']);
    assert.equal(again.code, 2);
    assert.match(again.json.error.message, /endpoint 'dup' already exists/);
    assert.equal(cli(['down', 'dup']).code, 0);
    const bad = cli(['up', '--mode=bridge', '--dev=nope0', '--json']);
    assert.equal(bad.code, 5, bad.err);
    assert.equal(bad.json.error.exitCode, 5);
    assert.deepEqual(taps(), []);
    assert.deepEqual(records(), []);
  });

  it('probe --json: every kernel implementation and transport, with a reason', () => {
    const r = cli(['probe', '--dev=br0', '--json'], { QEMU_NET_HELPER_VHOST_NET: join(dir, 'no-vhost-net') });
    assert.equal(r.code, 0, r.err);
    const rows = r.json as { kind: string; name: string; available: boolean; reason: string }[];
    const names = rows.map((x) => `${x.kind}:${x.name}`).sort();
    for (const k of ['kernel:bridge', 'kernel:macvtap', 'kernel:nat', 'kernel:route', 'kernel:sriov', 'kernel:veth', 'transport:macvtap', 'transport:socket', 'transport:tap', 'transport:vhost-kernel']) {
      assert.ok(names.includes(k), `${k} missing from ${names.join(' ')}`);
    }
    for (const x of rows) assert.ok(x.reason.length > 0, `${x.name} gives no reason`);
    assert.equal(rows.find((x) => x.name === 'bridge')!.available, true);
    const vk = rows.find((x) => x.name === 'vhost-kernel')!;
    assert.equal(vk.available, false);
    assert.match(vk.reason, /no-vhost-net missing/);
    assert.equal(rows.find((x) => x.name === 'sriov')!.available, false, 'br0 is no SR-IOV PF');
  });

  for (const step of [1, 2, 3]) {
    it(`crash safety: killed after setup step ${step}, gc leaves nothing behind`, () => {
      const r = cli(['up', '--mode=bridge', '--dev=br0', `--id=crash${step}`], { QEMU_NET_HELPER_FAULT_AFTER_STEP: String(step) });
      const killed = r.signal === 'SIGKILL';
      if (!killed) {
        // Fewer steps than `step`: setup finished; take it down normally.
        assert.equal(r.code, 0, r.err);
        assert.equal(cli(['down', `crash${step}`]).code, 0);
      }
      const g = cli(['gc', '--json']);
      assert.equal(g.code, 0, g.err);
      assert.deepEqual(taps(), [], `step ${step}: no tap may survive gc`);
      assert.deepEqual(records(), [], `step ${step}: no record may survive gc`);
    });
  }
});
