// When the helper cannot identify QEMU (QEMU lives outside the helper's pid
// namespace: SO_PEERCRED says pid 0), the endpoint is still never leaked: it
// is recorded as ended by its fd, kept while QEMU holds the macvtap, and
// released by gc once nobody holds it.
import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import { existsSync, mkdtempSync, readdirSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, before, describe, it } from 'node:test';
import { NetNs } from '../lib/netns.js';
import { BIN } from '../lib/paths.js';
import { haveQemu, startQemu } from '../lib/qemu.js';
import { eventually } from '../lib/wait.js';

describe('endpoint whose owner cannot be identified', { skip: !haveQemu() }, () => {
  let ns: NetNs;
  let dir: string;
  let env: NodeJS.ProcessEnv;
  const records = (): string[] => (existsSync(join(dir, 'state/endpoints')) ? readdirSync(join(dir, 'state/endpoints')) : []);
  const macvtaps = (): string[] => (JSON.parse(ns.ip('-d', '-json', 'link', 'show')) as { ifname: string; linkinfo?: { info_kind?: string } }[])
    .filter((l) => l.linkinfo?.info_kind === 'macvtap').map((l) => l.ifname);
  const gc = (): string => {
    const r = spawnSync('ip', ['netns', 'exec', ns.name, process.execPath, BIN, 'gc'], { encoding: 'utf8', env });
    assert.equal(r.status, 0, r.stderr);
    return r.stdout;
  };

  before(() => {
    ns = NetNs.create();
    ns.ip('link', 'add', 'vA', 'type', 'veth', 'peer', 'name', 'vB');
    ns.ip('link', 'set', 'vA', 'up');
    dir = mkdtempSync(join(tmpdir(), 'qnh-unknown-'));
    writeFileSync(join(dir, 'bridge.conf'), 'allow vA\n');
    env = { ...process.env, QEMU_NET_HELPER_STATE_DIR: join(dir, 'state'), QEMU_NET_HELPER_ACL: join(dir, 'bridge.conf') };
  });
  after(() => {
    ns?.destroy();
    if (dir) rmSync(dir, { recursive: true, force: true });
  });

  it('is kept while QEMU holds its fd and released by gc after QEMU quit', async () => {
    // A helper in a pid namespace of its own cannot see its parent QEMU.
    const helper = `unshare --pid --fork ${process.execPath} ${BIN} helper --mode=vepa --dev=vA --mac=52:54:00:00:00:61`;
    const q = await startQemu(ns, ['-netdev', `tap,id=n0,helper=${helper}`], env);
    try {
      await eventually('the endpoint record', () => records().length === 1 && macvtaps().length === 1, 30_000);
      const rec = JSON.parse(readFileSync(join(dir, 'state/endpoints', records()[0]!), 'utf8')) as { owner: unknown; lifetime: string };
      assert.equal(rec.owner, null);
      assert.equal(rec.lifetime, 'fd');
      assert.match(gc(), /kept/);
      assert.equal(macvtaps().length, 1, 'QEMU still holds it');
    } finally {
      await q.quit();
    }
    // The watcher died with the helper's pid namespace (its pid 1 exited): gc is the safety net.
    gc();
    assert.deepEqual(records(), []);
    assert.deepEqual(macvtaps(), []);
  });
});
