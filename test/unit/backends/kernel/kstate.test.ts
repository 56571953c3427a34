// The flock that serialises helpers sharing a NAT network or an uplink's
// proxy-ARP record: exclusive, and a stuck holder becomes an error, not a hang.
import assert from 'node:assert/strict';
import { closeSync, mkdtempSync, openSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { describe, it } from 'node:test';
import { readJson, withLock, writeJson } from '../../../../src/backends/kernel/kstate.js';
import { ExitCode, SetupError } from '../../../../src/errors.js';
import { c } from '../../../../src/sys/libc.js';

describe('kernel: state lock and records', () => {
  it('runs the function under the lock, and times out on a holder that never lets go', () => {
    const dir = mkdtempSync(join(tmpdir(), 'qnh-lock-'));
    try {
      const lock = join(dir, 'sub', 'lock');
      assert.equal(withLock(lock, () => 42), 42, 'creates the directory and the lock file');
      // flock locks belong to open file descriptions: a second open in this process is another holder.
      const holder = openSync(lock, 'a');
      assert.equal(c.flock(holder, 2), 0);
      const t0 = Date.now();
      assert.throws(() => withLock(lock, () => 1, 150), (e: unknown) => e instanceof SetupError && e.exitCode === ExitCode.SETUP_FAILED && /has held .*lock for more than/.test(e.message));
      assert.ok(Date.now() - t0 >= 140);
      closeSync(holder);
      assert.equal(withLock(lock, () => 'free again', 150), 'free again');
      // Released when fn throws too.
      assert.throws(() => withLock(lock, () => { throw new Error('boom'); }), /boom/);
      assert.equal(withLock(lock, () => 'ok', 150), 'ok');
    } finally {
      rmSync(dir, { recursive: true, force: true });
    }
  });

  it('records are written whole; a torn file reads as absent', () => {
    const dir = mkdtempSync(join(tmpdir(), 'qnh-rec-'));
    try {
      const f = join(dir, 'a', 'r.json');
      assert.equal(readJson(f), null);
      writeJson(f, { x: 1 });
      assert.deepEqual(readJson(f), { x: 1 });
      closeSync(openSync(f, 'w'));
      assert.equal(readJson(f), null);
    } finally {
      rmSync(dir, { recursive: true, force: true });
    }
  });
});
