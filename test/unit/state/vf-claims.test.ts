// VF claim records: owner identity (pid + start time), staleness, takeover,
// release, listing, lock contention, and the files left on disk.
import assert from 'node:assert/strict';
import { spawn, spawnSync } from 'node:child_process';
import { closeSync, existsSync, mkdtempSync, openSync, readdirSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterEach, beforeEach, describe, it } from 'node:test';
import { ConfigError, ExhaustedError, ExitCode } from '../../../src/errors.js';
import { c } from '../../../src/sys/libc.js';
import { ownerOf, ownerStatus, parseProcStat, selfOwner, type OwnerRef } from '../../../src/state/owner.js';
import { claimFirstFree, listClaims, readClaim, releaseVf, tryClaimVf, updateClaimData } from '../../../src/state/vf-claims.js';

const A = '0000:03:10.0';
const B = '0000:03:10.1';
const C = '0000:03:10.2';

/** The pid of a process that has exited and been reaped. */
function deadPid(): number {
  const r = spawnSync('sh', ['-c', 'echo $$']);
  return Number(r.stdout.toString().trim());
}

describe('owner identity', () => {
  it('parses /proc/<pid>/stat even when comm holds spaces and parentheses', () => {
    const fields = Array.from({ length: 50 }, (_, i) => String(i + 3));
    fields[0] = 'S';
    assert.deepEqual(parseProcStat(`123 (a) (b c)) ${fields.join(' ')}`), { state: 'S', startTime: '22' });
    assert.equal(parseProcStat('garbage'), null);
    assert.equal(parseProcStat('1 (x) S 1 2'), null);
  });

  it('a live process is alive; a dead pid and a reused pid (other start time) are gone', () => {
    const me = selfOwner();
    assert.equal(ownerStatus(me), 'alive');
    assert.equal(ownerStatus({ pid: me.pid, startTime: String(BigInt(me.startTime) + 1n) }), 'gone');
    assert.equal(ownerStatus({ pid: deadPid(), startTime: me.startTime }), 'gone');
    assert.throws(() => ownerOf(deadPid()));
    assert.equal(ownerOf(process.ppid).pid, process.ppid);
  });
});

describe('VF claims', () => {
  let dir: string;
  let me: OwnerRef;
  let parent: OwnerRef;
  beforeEach(() => {
    dir = mkdtempSync(join(tmpdir(), 'qnh-claims-'));
    me = selfOwner();
    parent = ownerOf(process.ppid);
  });
  afterEach(() => rmSync(dir, { recursive: true, force: true }));
  const rec = (pci: string): Record<string, unknown> => JSON.parse(readFileSync(join(dir, 'vf', `${pci}.json`), 'utf8')) as Record<string, unknown>;

  it('claims a free VF; a live other owner is refused; the same endpoint again is idempotent', () => {
    const r = tryClaimVf(dir, A, { owner: me, endpointId: 'e1', data: { x: 1 } });
    assert.ok(r.ok && !r.again && !r.previous);
    assert.deepEqual({ ...rec(A), claimedAt: 0 }, { version: 1, pci: A, owner: me, endpointId: 'e1', claimedAt: 0, claimedBy: process.pid, data: { x: 1 } });
    const other = tryClaimVf(dir, A, { owner: parent, endpointId: 'e2' });
    assert.ok(!other.ok && other.reason === 'held' && other.holder.endpointId === 'e1');
    // Same process, other endpoint (a second NIC of the same QEMU): still refused.
    assert.equal(tryClaimVf(dir, A, { owner: me, endpointId: 'e3' }).ok, false);
    const again = tryClaimVf(dir, A, { owner: me, endpointId: 'e1' });
    assert.ok(again.ok && again.again);
  });

  it('takes over a record whose owner died, undoing its changes first (onStale, under the lock)', () => {
    const dead = { pid: deadPid(), startTime: me.startTime };
    assert.ok(tryClaimVf(dir, A, { owner: dead, endpointId: 'old', data: { saved: 'mac' } }).ok);
    assert.equal(readClaim(dir, A)?.state, 'stale');
    const seen: string[] = [];
    const r = tryClaimVf(dir, A, { owner: me, endpointId: 'new' }, { onStale: (s) => seen.push(s.endpointId) });
    assert.ok(r.ok && r.previous?.endpointId === 'old' && r.previous.owner.pid === dead.pid);
    assert.deepEqual(seen, ['old']);
    assert.equal(rec(A).endpointId, 'new');
  });

  it('takes over a record whose pid was reused by another process (start time differs)', () => {
    const reused = { pid: me.pid, startTime: '1' };
    assert.ok(tryClaimVf(dir, A, { owner: reused, endpointId: 'old' }).ok);
    assert.equal(readClaim(dir, A)?.state, 'stale');
    const r = tryClaimVf(dir, A, { owner: parent, endpointId: 'new' });
    assert.ok(r.ok && r.previous?.owner.startTime === '1');
  });

  it('keeps a stale record when undoing its changes fails, and skips that VF', () => {
    assert.ok(tryClaimVf(dir, A, { owner: { pid: deadPid(), startTime: '5' }, endpointId: 'old' }).ok);
    const r = tryClaimVf(dir, A, { owner: me, endpointId: 'new' }, { onStale: () => { throw new Error('ip failed'); } });
    assert.ok(!r.ok && r.reason === 'stale-cleanup-failed' && /ip failed/.test(r.detail));
    assert.equal(rec(A).endpointId, 'old');
  });

  it('a corrupt record is taken over; a newer-format record is never touched', () => {
    tryClaimVf(dir, B, { owner: me, endpointId: 'mk' }); // creates the directory
    writeFileSync(join(dir, 'vf', `${A}.json`), '{"version":1,"pci":');
    writeFileSync(join(dir, 'vf', `${C}.json`), JSON.stringify({ version: 2, whatever: true }));
    assert.deepEqual(listClaims(dir).map((e) => [e.pci, e.state]), [[A, 'corrupt'], [B, 'held'], [C, 'foreign']]);
    assert.ok(tryClaimVf(dir, A, { owner: me, endpointId: 'e' }).ok);
    const f = tryClaimVf(dir, C, { owner: me, endpointId: 'e' });
    assert.ok(!f.ok && f.reason === 'foreign');
    assert.equal(releaseVf(dir, C), 'not-owner');
    assert.equal(rec(C).version, 2);
  });

  it('claimFirstFree takes the first free VF in order and throws ExhaustedError listing the holders', () => {
    assert.equal(claimFirstFree(dir, [A, B, C], { owner: me, endpointId: 'e1' }).record.pci, A);
    assert.equal(claimFirstFree(dir, [A, B, C], { owner: parent, endpointId: 'e2' }).record.pci, B);
    assert.equal(claimFirstFree(dir, [A, B, C], { owner: me, endpointId: 'e3' }).record.pci, C);
    assert.throws(() => claimFirstFree(dir, [A, B, C], { owner: parent, endpointId: 'e4' }), (e: unknown) =>
      e instanceof ExhaustedError && e.exitCode === ExitCode.EXHAUSTED && e.message.includes(`${A} (pid ${me.pid}, e1)`) && e.message.includes(`${B} (pid ${parent.pid}, e2)`));
    assert.throws(() => claimFirstFree(dir, [], { owner: me, endpointId: 'e' }), ExhaustedError);
  });

  it('release: only the matching endpoint, runs beforeRemove under the lock, idempotent; lock files stay', () => {
    assert.ok(tryClaimVf(dir, A, { owner: me, endpointId: 'e1' }).ok);
    assert.equal(releaseVf(dir, A, { owner: parent }), 'not-owner');
    assert.equal(releaseVf(dir, A, { owner: me, endpointId: 'other' }), 'not-owner');
    assert.equal(releaseVf(dir, A, { onlyStale: true }), 'not-owner');
    assert.throws(() => releaseVf(dir, A, { owner: me }, () => { throw new Error('restore failed'); }), /restore failed/);
    assert.equal(readClaim(dir, A)?.state, 'held', 'a failed restore keeps the claim for gc');
    const seen: string[] = [];
    assert.equal(releaseVf(dir, A, { owner: me, endpointId: 'e1' }, (r) => seen.push(r.endpointId)), 'released');
    assert.deepEqual(seen, ['e1']);
    assert.equal(releaseVf(dir, A, { owner: me, endpointId: 'e1' }), 'absent');
    assert.equal(readClaim(dir, A), null);
    assert.deepEqual(readdirSync(join(dir, 'vf')), [`${A}.lock`], 'the lock file stays; no temp files are left');
  });

  it('updateClaimData only for the holder', () => {
    assert.ok(tryClaimVf(dir, A, { owner: me, endpointId: 'e1' }).ok);
    updateClaimData(dir, A, { owner: me, endpointId: 'e1' }, { saved: { mac: '02:00:00:00:00:01' } });
    assert.deepEqual(rec(A).data, { saved: { mac: '02:00:00:00:00:01' } });
    assert.throws(() => updateClaimData(dir, A, { owner: parent, endpointId: 'e1' }, {}), /no longer held/);
    assert.throws(() => updateClaimData(dir, B, { owner: me, endpointId: 'e1' }, {}), /no longer held/);
  });

  it('refuses anything but a PCI address as a file name', () => {
    for (const bad of ['../../etc/passwd', '0000:03:10.8', '0000:03:10', 'x', '0000:03:10.0/..']) {
      assert.throws(() => tryClaimVf(dir, bad, { owner: me, endpointId: 'e' }), ConfigError, bad);
      assert.throws(() => releaseVf(dir, bad), ConfigError, bad);
    }
  });

  it('a lock held by someone else: skipped at once, waited for in the second pass', async () => {
    assert.equal(releaseVf(dir, A), 'absent'); // creates the lock file
    // Another open file description: flock conflicts even inside one process.
    const fd = openSync(join(dir, 'vf', `${A}.lock`), 'r+');
    try {
      assert.equal(c.flock(fd, 2 | 4), 0);
      const r = tryClaimVf(dir, A, { owner: me, endpointId: 'e' });
      assert.ok(!r.ok && r.reason === 'busy');
      assert.throws(() => claimFirstFree(dir, [A], { owner: me, endpointId: 'e' }, { waitMs: 30 }), /lock busy/);
      assert.equal(claimFirstFree(dir, [A, B], { owner: me, endpointId: 'e' }, { waitMs: 30 }).record.pci, B);
    } finally {
      closeSync(fd);
    }
    // A holder in another process that lets go after ~300 ms: the second pass gets it.
    const libc = new URL('../../../src/sys/libc.js', import.meta.url).href;
    const holder = spawn(process.execPath, ['--input-type=module', '-e', `
      import { c } from '${libc}'; import { openSync } from 'node:fs';
      const fd = openSync(${JSON.stringify(join(dir, 'vf', `${A}.lock`))}, 'r+');
      if (c.flock(fd, 6) !== 0) process.exit(3);
      console.log('locked'); setTimeout(() => process.exit(0), 300);`], { stdio: ['ignore', 'pipe', 'inherit'] });
    await new Promise<void>((res, rej) => {
      holder.stdout!.once('data', () => res());
      holder.once('exit', (code) => rej(new Error(`holder exited ${code}`)));
    });
    const t0 = Date.now();
    const got = claimFirstFree(dir, [A], { owner: parent, endpointId: 'late' }, { waitMs: 3000 });
    assert.equal(got.record.pci, A);
    assert.ok(Date.now() - t0 >= 100, 'it waited for the holder');
    await new Promise((res) => holder.once('exit', res));
    assert.ok(existsSync(join(dir, 'vf', `${A}.json`)));
  });
});
