// Endpoints know their network namespace: `up` in namespace A, then `down`,
// `gc` and `list` from namespace B and from the root namespace act in A (or
// refuse when A is gone), and never report success for what they did not remove.
import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import { existsSync, mkdtempSync, readdirSync, readFileSync, rmSync, statSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, before, describe, it } from 'node:test';
import { NetNs } from '../lib/netns.js';
import { BIN } from '../lib/paths.js';

interface Outcome { code: number | null; out: string; err: string; json: any }

describe('endpoints across network namespaces', () => {
  let a: NetNs;
  let b: NetNs;
  let dir: string;
  let env: NodeJS.ProcessEnv;
  /** The CLI in namespace `ns`, or in the root namespace (this test's own) with null. */
  const cli = (ns: NetNs | null, args: string[]): Outcome => {
    const cmd = ns ? ['ip', 'netns', 'exec', ns.name, process.execPath, BIN, ...args] : [process.execPath, BIN, ...args];
    const r = spawnSync(cmd[0]!, cmd.slice(1), { env, encoding: 'utf8' });
    let json: unknown = null;
    try { json = JSON.parse(r.stdout); } catch { /* not JSON */ }
    return { code: r.status, out: r.stdout, err: r.stderr, json };
  };
  const taps = (ns: NetNs): string[] => ns.links().filter((l) => l.startsWith('tap'));
  const recordFile = (id: string): string => join(dir, 'state/endpoints', `${id}.json`);
  const upInA = (id: string): string => {
    const r = cli(a, ['up', '--mode=bridge', '--br=br0', `--id=${id}`, '--json']);
    assert.equal(r.code, 0, r.err);
    assert.deepEqual(r.json.endpoint.netns, { inode: statSync(`/run/netns/${a.name}`).ino, path: `/run/netns/${a.name}` });
    assert.ok(taps(a).includes(r.json.endpoint.ifname));
    return r.json.endpoint.ifname as string;
  };

  before(() => {
    a = NetNs.create('qnhA');
    b = NetNs.create('qnhB');
    a.addBridge('br0');
    b.addBridge('br0'); // same names in B: a release in the wrong namespace would find something
    dir = mkdtempSync(join(tmpdir(), 'qnh-netns-'));
    env = { ...process.env, QEMU_NET_HELPER_STATE_DIR: join(dir, 'state'), QEMU_NET_HELPER_CONFIG: join(dir, 'config') };
  });
  after(() => {
    a.destroy();
    b.destroy();
    rmSync(dir, { recursive: true, force: true });
  });

  it('list shows the namespace: "here" inside it, "other" elsewhere, with its path and inode', () => {
    upInA('n1');
    const there = cli(b, ['list', '--json']);
    assert.equal(there.code, 0, there.err);
    assert.equal(there.json.endpoints[0].netnsStatus, 'other');
    assert.equal(cli(a, ['list', '--json']).json.endpoints[0].netnsStatus, 'here');
    const human = cli(null, ['list']);
    assert.match(human.out, new RegExp(`^n1 .* netns net:\\[${statSync(`/run/netns/${a.name}`).ino}\\] \\(/run/netns/${a.name}\\) `, 'm'));
    assert.equal(cli(a, ['down', 'n1']).code, 0);
  });

  it('down from another namespace, and from the root namespace, removes the tap in the first one', () => {
    const tapB = (() => { b.ip('tuntap', 'add', 'dev', 'tap0', 'mode', 'tap'); return 'tap0'; })();
    try {
      const t1 = upInA('n2');
      const d = cli(b, ['down', 'n2', '--json']);
      assert.equal(d.code, 0, d.err);
      assert.deepEqual(d.json.released, [`bridge: link ${t1}`]);
      assert.deepEqual(d.json.failed, []);
      assert.equal(taps(a).includes(t1), false, 'the tap in A is gone');
      assert.ok(b.links().includes(tapB), "B's tap of the same name is untouched");
      assert.equal(existsSync(recordFile('n2')), false);

      const t2 = upInA('n3');
      const r = cli(null, ['down', 'n3']);
      assert.equal(r.code, 0, r.err);
      assert.match(r.out, new RegExp(`released bridge: link ${t2}`));
      assert.deepEqual(taps(a), []);
    } finally {
      b.ip('link', 'del', tapB);
    }
  });

  it('gc from the root namespace releases a dead endpoint in its own namespace', () => {
    const t = upInA('n4');
    // An owner that has exited: what a killed watcher leaves for gc.
    const dead = spawnSync('true').pid!;
    const rec = JSON.parse(readFileSync(recordFile('n4'), 'utf8'));
    writeFileSync(recordFile('n4'), JSON.stringify({ ...rec, owner: { pid: dead, startTime: '1' }, lifetime: 'owner' }), { mode: 0o600 });
    const g = cli(null, ['gc', '--json']);
    assert.equal(g.code, 0, g.err);
    assert.deepEqual(g.json.endpoints.released.map((e: { id: string; released: string[] }) => [e.id, e.released]), [['n4', [`bridge: link ${t}`]]]);
    assert.equal(taps(a).includes(t), false);
  });

  it('a namespace that is gone: down refuses (exit 5, one line), gc keeps the record, list says GONE, down --forget drops it', () => {
    const c = NetNs.create('qnhC');
    c.addBridge('br0');
    const r = cli(c, ['up', '--mode=bridge', '--br=br0', '--id=n5', '--json']);
    assert.equal(r.code, 0, r.err);
    c.destroy();
    const d = cli(b, ['down', 'n5', '--json']);
    assert.equal(d.code, 5, d.err);
    assert.equal(d.err.trim().split('\n').length, 1);
    assert.match(d.err, /^qemu-net-helper: endpoint n5 was made in network namespace net:\[\d+\] \(\/run\/netns\/qnhC-[^)]+\), which no longer exists .*down --forget n5/);
    assert.equal(d.json.error.exitCode, 5);
    assert.ok(existsSync(recordFile('n5')), 'the record stays');
    assert.equal(cli(null, ['list', '--json']).json.endpoints[0].netnsStatus, 'gone');
    assert.match(cli(null, ['list']).out, /GONE/);
    const g = cli(null, ['gc', '--json']);
    assert.equal(g.code, 0, g.err);
    assert.deepEqual(g.json.endpoints.released, []);
    assert.match(g.json.endpoints.kept[0].why, /no longer exists/);
    const f = cli(null, ['down', '--forget', 'n5', '--json']);
    assert.equal(f.code, 0, f.err);
    assert.equal(f.json.forgotten, true);
    assert.deepEqual(readdirSync(join(dir, 'state/endpoints')), []);
    assert.equal(cli(null, ['down', 'n5', '--json']).json.alreadyGone, true);
  });
});
