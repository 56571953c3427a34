// The CNI plugin's paths file: trusted only when it and its directory are
// root's and writable by root alone; the network configuration's stateDir and
// switchControl only confirm the paths in force.
import assert from 'node:assert/strict';
import { chmodSync, chownSync, mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, describe, it } from 'node:test';
import { cniHost, notRootOwned, PATHS_FILE_NAME, readPathsFile } from '../../../src/cni/host-paths.js';

describe('CNI paths file', { skip: process.getuid?.() !== 0 }, () => {
  const dir = mkdtempSync(join(tmpdir(), 'qnh-cni-paths-'));
  chmodSync(dir, 0o755);
  const file = join(dir, PATHS_FILE_NAME);
  const plugin = join(dir, 'qemu-net-helper');
  after(() => rmSync(dir, { recursive: true, force: true }));

  it("is read beside the plugin when root's; the configuration may only name the same paths", () => {
    writeFileSync(file, JSON.stringify({ stateDir: '/run/qnh-test-state', switchControl: '/run/qnh-test.ctl' }), { mode: 0o644 });
    assert.deepEqual(readPathsFile(plugin)?.paths, { stateDir: '/run/qnh-test-state', switchControl: '/run/qnh-test.ctl' });
    const host = cniHost({}, {}, plugin);
    assert.equal(host.stateDir, '/run/qnh-test-state');
    assert.equal(host.switchControl, '/run/qnh-test.ctl');
    assert.equal(cniHost({ stateDir: '/run/qnh-test-state' }, {}, plugin).stateDir, '/run/qnh-test-state');
    assert.throws(() => cniHost({ stateDir: '/home/evil' }, {}, plugin), /stateDir '\/home\/evil' in the network configuration is not the plugin's/);
    assert.equal(cniHost({}, { QEMU_NET_HELPER_STATE_DIR: '/run/from-env' }, plugin).stateDir, '/run/from-env', "root's environment wins");
  });
  it('is refused when others may write it or its directory, or it is not root-owned, or has unknown fields', () => {
    chmodSync(file, 0o666);
    assert.match(notRootOwned(file)!, /writable by others \(mode 666\)/);
    assert.throws(() => readPathsFile(plugin), /is not root's/);
    chmodSync(file, 0o644);
    chownSync(file, 65534, 65534);
    assert.match(notRootOwned(file)!, /owned by uid 65534/);
    chownSync(file, 0, 0);
    chmodSync(dir, 0o777);
    assert.match(notRootOwned(file)!, /writable by others \(mode 777\)/);
    chmodSync(dir, 0o755);
    writeFileSync(file, JSON.stringify({ stateDir: 'relative' }));
    assert.throws(() => readPathsFile(plugin), /stateDir: an absolute path/);
    writeFileSync(file, JSON.stringify({ acl: '/x' }));
    assert.throws(() => readPathsFile(plugin), /paths file/);
  });
});
