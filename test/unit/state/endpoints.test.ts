// What an endpoint record on disk must hold before down/gc/the watcher act on
// it (zod schemas in state/endpoints.ts, owner.ts, netns.ts), and the reason
// a damaged or forged one is refused with.
import assert from 'node:assert/strict';
import { mkdirSync, mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { describe, it } from 'node:test';
import { endpointRecordProblem, isEndpointRecord, listEndpoints, loadEndpoint, releasedTombstone } from '../../../src/state/endpoints.js';
import { isOwnerRef } from '../../../src/state/owner.js';
import { isNetnsRef } from '../../../src/state/netns-ref.js';

const good = {
  version: 1, id: 'vm1', createdAt: '2026-12-07T07:00:00.000Z', owner: { pid: 4242, startTime: '123456' }, watcher: null,
  mode: 'bridge', kernel: 'bridge', transport: 'tap', ifname: 'tap3', mac: null, mtu: 1500, devicePath: null, owned: [],
  uid: 1000, lifetime: 'owner', netns: { inode: 4026531840, path: null }, info: {},
};

describe('endpoint records', () => {
  it('accepts a record, and one of an older version without uid, lifetime or netns', () => {
    assert.equal(endpointRecordProblem(good), null);
    const { uid: _u, lifetime: _l, netns: _n, ...older } = good;
    assert.equal(isEndpointRecord(older), true);
    assert.equal(isEndpointRecord({ ...good, laterField: 1 }), true, 'fields of a later release are kept');
  });

  it('names the field a damaged or forged record gets wrong', () => {
    const cases: [object, RegExp][] = [
      [{ ...good, version: 2 }, /^version: /],
      [{ ...good, owner: { pid: '4242', startTime: '1' } }, /^owner\.pid: /],
      [{ ...good, owner: { pid: 0, startTime: '1' } }, /^owner\.pid: /],
      [{ ...good, owner: { pid: 1, startTime: '1e3' } }, /^owner\.startTime: /],
      [{ ...good, owner: undefined }, /^owner: /],
      [{ ...good, watcher: 7 }, /^watcher: /],
      [{ ...good, uid: -1 }, /^uid: /],
      [{ ...good, uid: 2 ** 53 }, /^uid: /],
      [{ ...good, lifetime: 'forever' }, /^lifetime: /],
      [{ ...good, netns: { inode: 5, path: 'relative/ns' } }, /^netns\.path: /],
      [{ ...good, netns: { inode: -1, path: null } }, /^netns\.inode: /],
      [{ ...good, owned: {} }, /^owned: /],
      [[good], /expected object/],
    ];
    for (const [rec, re] of cases) assert.match(endpointRecordProblem(rec) ?? 'accepted', re, JSON.stringify(rec));
  });

  it('owner and netns references alone', () => {
    assert.equal(isOwnerRef({ pid: 1, startTime: '0' }), true);
    assert.equal(isOwnerRef(null), false);
    assert.equal(isOwnerRef({ pid: 1.5, startTime: '0' }), false);
    assert.equal(isNetnsRef({ inode: 1, path: '/run/netns/a' }), true);
    assert.equal(isNetnsRef({ inode: 1 }), false, 'path is null or absolute, never missing');
  });

  it('load, list and tombstones say why a file is refused', () => {
    const dir = mkdtempSync(join(tmpdir(), 'qnh-rec-'));
    try {
      mkdirSync(join(dir, 'endpoints'));
      mkdirSync(join(dir, 'released'));
      writeFileSync(join(dir, 'endpoints', 'vm1.json'), JSON.stringify(good));
      writeFileSync(join(dir, 'endpoints', 'vm2.json'), JSON.stringify({ ...good, id: 'vm2', uid: 'root' }));
      assert.equal(loadEndpoint(dir, 'vm1')?.id, 'vm1');
      assert.throws(() => loadEndpoint(dir, 'vm2'), /vm2\.json is not an endpoint record of version 1 \(uid: /);
      const listed = listEndpoints(dir);
      assert.equal(listed.length, 2);
      assert.match((listed[1] as { corrupt: string }).corrupt, /^not an endpoint record \(uid: /);
      writeFileSync(join(dir, 'released', 'vm3'), JSON.stringify({ uid: 1000, releasedAt: 'x' }));
      writeFileSync(join(dir, 'released', 'vm4'), JSON.stringify({ uid: '1000', releasedAt: 'x' }));
      writeFileSync(join(dir, 'released', 'vm5'), 'not json');
      assert.deepEqual(releasedTombstone(dir, 'vm3'), { uid: 1000, releasedAt: 'x' });
      assert.equal(releasedTombstone(dir, 'vm4'), null);
      assert.equal(releasedTombstone(dir, 'vm5'), null);
    } finally {
      rmSync(dir, { recursive: true, force: true });
    }
  });
});
