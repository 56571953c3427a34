// A helper holding a privilege its caller did not give it (file capabilities
// on a copy of node: AT_SECURE) acts on the caller's behalf, so the caller's
// environment and flags choose no file: the ACL, tun device and state
// directory it names are ignored, and --acl/--config are refused.
import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import { chmodSync, copyFileSync, existsSync, mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join, resolve } from 'node:path';
import { after, before, describe, it } from 'node:test';
import { NetNs } from '../lib/netns.js';
import { ROOT } from '../lib/paths.js';

const CLIENT = resolve(ROOT, 'dist/test/lib/unpriv-client.js');
const USER = 65534;
const haveSetcap = existsSync('/usr/sbin/setcap') || existsSync('/sbin/setcap');

describe('helper with file capabilities (AT_SECURE): the caller chooses no file', { skip: !haveSetcap }, () => {
  let ns: NetNs;
  let dir: string;
  let node: string;

  const run = (args: string[], env: NodeJS.ProcessEnv): { code: number | null; stderr: string; iff: (string | null)[] } => {
    const job = { kind: 'helper', args, env: { PATH: process.env.PATH, ...env } };
    const r = spawnSync('ip', ['netns', 'exec', ns.name, 'setpriv', `--reuid=${USER}`, `--regid=${USER}`, '--clear-groups', node, CLIENT, JSON.stringify(job)], { encoding: 'utf8' });
    assert.equal(r.status, 0, r.stderr);
    return JSON.parse(r.stdout) as { code: number | null; stderr: string; iff: (string | null)[] };
  };

  before(() => {
    ns = NetNs.create();
    ns.addBridge('br0');
    dir = mkdtempSync(join(tmpdir(), 'qnh-caps-'));
    chmodSync(dir, 0o755);
    node = join(dir, 'node');
    copyFileSync(process.execPath, node);
    chmodSync(node, 0o755);
    const r = spawnSync('setcap', ['cap_net_admin+ep', node], { encoding: 'utf8' });
    assert.equal(r.status, 0, r.stderr);
    writeFileSync(join(dir, 'allow-all.conf'), 'allow all\n');
  });
  after(() => {
    ns?.destroy();
    if (dir) rmSync(dir, { recursive: true, force: true });
  });

  it("ignores the caller's QEMU_NET_HELPER_ACL (the fixed ACL decides) and refuses --acl and --config", () => {
    const acl = existsSync('/etc/qemu-net-helper/bridge.conf');
    const r = run(['--fd={FD}', '--br=br0'], { QEMU_NET_HELPER_ACL: join(dir, 'allow-all.conf'), QEMU_NET_HELPER_STATE_DIR: dir, QEMU_NET_HELPER_TUN: join(dir, 'allow-all.conf') });
    if (!acl) {
      assert.equal(r.code, 8, r.stderr);
      assert.match(r.stderr, /ACL file \/etc\/qemu-net-helper\/bridge\.conf does not exist/);
    } else {
      assert.doesNotMatch(r.stderr, /allow-all/);
    }
    for (const flag of [`--acl=${join(dir, 'allow-all.conf')}`, `--config=${dir}`]) {
      const x = run(['--fd={FD}', '--br=br0', flag], {});
      assert.equal(x.code, 3, x.stderr);
      assert.match(x.stderr, /is only for root/);
    }
  });
});
