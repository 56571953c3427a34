// The host context: what a caller's environment may choose, and what our
// children get.
import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import { atSecure, childEnv, DEFAULT_PATHS, hostContext, SAFE_PATH, systemBinary } from '../../../src/host/context.js';

const hostile = {
  QEMU_NET_HELPER_STATE_DIR: '/tmp/mine', QEMU_NET_HELPER_SYSFS: '/tmp/sys', QEMU_NET_HELPER_TUN: '/etc/shadow',
  QEMU_NET_HELPER_VHOST_NET: '/root/secret', QEMU_NET_HELPER_NFT: '/tmp/nft', QEMU_NET_HELPER_DNSMASQ: '/tmp/dnsmasq',
  QEMU_NET_HELPER_SWITCH: '/tmp/ctl', PATH: '/tmp/evil', NODE_OPTIONS: '--require /tmp/evil.js',
};

describe('host context', () => {
  it('an untrusted caller\'s environment chooses nothing', () => {
    const h = hostContext(hostile, false, true);
    assert.equal(h.stateDir, DEFAULT_PATHS.stateDir);
    assert.equal(h.sysfsRoot, DEFAULT_PATHS.sysfs);
    assert.equal(h.tunDevice, DEFAULT_PATHS.tun);
    assert.equal(h.vhostNetDevice, DEFAULT_PATHS.vhostNet);
    assert.equal(h.switchControl, DEFAULT_PATHS.switchControl);
    assert.notEqual(h.bin.nft, '/tmp/nft');
    assert.notEqual(h.bin.dnsmasq, '/tmp/dnsmasq');
    assert.equal(h.trusted, false);
  });
  it('a root caller may point it elsewhere (tests do)', () => {
    const h = hostContext(hostile, true, true);
    assert.equal(h.stateDir, '/tmp/mine');
    assert.equal(h.tunDevice, '/etc/shadow');
    assert.equal(h.bin.nft, '/tmp/nft');
  });
  it('children get a system PATH and only the paths of a trusted context', () => {
    assert.deepEqual(childEnv(hostContext(hostile, false, true)), { PATH: SAFE_PATH, LC_ALL: 'C' });
    const env = childEnv(hostContext(hostile, true, true));
    assert.equal(env.PATH, SAFE_PATH);
    assert.equal(env.NODE_OPTIONS, undefined);
    assert.equal(env.QEMU_NET_HELPER_STATE_DIR, '/tmp/mine');
  });
  it('programs come from the system directories, never from PATH', () => {
    const saved = process.env.PATH;
    process.env.PATH = '/nonexistent';
    try {
      assert.match(systemBinary('ip') ?? '', /^\/(usr\/)?s?bin\/ip$/);
      assert.equal(systemBinary('no-such-program-qnh'), null);
    } finally {
      process.env.PATH = saved;
    }
  });
  it('this test process was not started with privileges it did not have (AT_SECURE clear)', () => {
    assert.equal(atSecure(), false);
  });
});

describe('stale temp files', () => {
  it('gc removes temp files of dead writers only', async () => {
    const { mkdtempSync, readdirSync, rmSync, writeFileSync } = await import('node:fs');
    const { tmpdir } = await import('node:os');
    const { join } = await import('node:path');
    const { removeStaleTemps } = await import('../../../src/state/atomic-file.js');
    const dir = mkdtempSync(join(tmpdir(), 'qnh-tmp-'));
    try {
      for (const n of ['.a.json.111.0123abcd.tmp', '.b.json.222.89abcdef.tmp', 'c.json', '.d.json.x.tmp']) writeFileSync(join(dir, n), '');
      assert.deepEqual(removeStaleTemps(dir, (pid) => pid === 222), ['.a.json.111.0123abcd.tmp']);
      assert.deepEqual(readdirSync(dir).sort(), ['.b.json.222.89abcdef.tmp', '.d.json.x.tmp', 'c.json']);
    } finally {
      rmSync(dir, { recursive: true, force: true });
    }
  });
});
