// The switch's pure tenancy and limit decisions: who may act on which port,
// who owns a port a control client adds, which front-end may take a port,
// which directory an owner may write; the control codec's "owner" field; and
// memory tables measured against the limits on plain numbers.
import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import { ControlError, parseRequest } from '../../../src/vhost-user/control/codec.js';
import { checkLimits, DEFAULT_MEMORY_LIMITS, formatBytes, MemoryError, parseByteSize, viewsNeeded } from '../../../src/vhost-user/device/memory-table.js';
import { actRefusal, frontEndAllowed, isAdmin, mayWriteDir, ownerForAdd, parseOwnerSpec } from '../../../src/vhost-user/tenancy.js';
import { UsageError } from '../../../src/errors.js';
import { MAP_BUDGET, MapBudget, SHARED_MAP_BUDGET } from '../../../src/vhost-user/device/map-budget.js';

const GiB = 2 ** 30;
const alice = { uid: 1000, gid: 1000 };
const bob = { uid: 1001, gid: 1001 };
const root = { uid: 0, gid: 0 };

describe('switch tenancy: who may do what', () => {
  it('root acts on every port; a tenant only on its own', () => {
    assert.ok(isAdmin(0));
    assert.ok(!isAdmin(1000) || process.geteuid?.() === 1000);
    assert.equal(actRefusal(root, alice, 'set-mode 3'), null);
    assert.equal(actRefusal(alice, alice, 'set-mode 3'), null);
    assert.equal(actRefusal(bob, alice, 'remove-port 3'), 'remove-port 3: the port belongs to uid 1000; uid 1001 may act only on its own ports');
    // Same group is not enough to act on someone's port.
    assert.match(String(actRefusal({ uid: 1002, gid: 1000 }, alice, 'set-mode 1')), /belongs to uid 1000/);
  });

  it('owner of an added port: root names anyone (or takes the default); a tenant is the owner, never names another', () => {
    assert.deepEqual(ownerForAdd(root, alice), alice);
    assert.equal(ownerForAdd(root, undefined), undefined);
    assert.deepEqual(ownerForAdd(alice, undefined), alice);
    assert.deepEqual(ownerForAdd(alice, alice), alice);
    assert.throws(() => ownerForAdd(alice, bob), (e: unknown) => e instanceof UsageError && /"owner" uid 1001 gid 1001 is not the caller \(uid 1000 gid 1000\)/.test(e.message));
    assert.throws(() => ownerForAdd(alice, { uid: 1000, gid: 0 }), /not the caller/, 'not even another group');
    assert.throws(() => ownerForAdd(alice, root), /only root names another owner/);
  });

  it('front-ends: the owner and root; the owner\'s group only when the socket mode grants it', () => {
    assert.ok(frontEndAllowed({ uid: 0, gid: 0 }, alice, 0o600));
    assert.ok(frontEndAllowed({ uid: 1000, gid: 5 }, alice, 0o600));
    assert.ok(!frontEndAllowed({ uid: 1001, gid: 1001 }, alice, 0o666), 'a world-writable socket does not make strangers owners');
    assert.ok(!frontEndAllowed({ uid: 1001, gid: 1000 }, alice, 0o600));
    assert.ok(frontEndAllowed({ uid: 1001, gid: 1000 }, alice, 0o660));
  });

  it('directories an owner may write: by uid, by primary group, by others; root always', () => {
    assert.ok(mayWriteDir(alice, { uid: 1000, gid: 0, mode: 0o700 }));
    assert.ok(!mayWriteDir(alice, { uid: 1000, gid: 0, mode: 0o500 }));
    assert.ok(!mayWriteDir(alice, { uid: 0, gid: 0, mode: 0o755 }));
    assert.ok(mayWriteDir(alice, { uid: 0, gid: 1000, mode: 0o770 }));
    assert.ok(!mayWriteDir(alice, { uid: 0, gid: 1000, mode: 0o750 }));
    assert.ok(mayWriteDir(alice, { uid: 0, gid: 0, mode: 0o1777 }), '/tmp-like');
    // The owning uid's bits decide even when others' would allow (as the kernel does).
    assert.ok(!mayWriteDir(alice, { uid: 1000, gid: 0, mode: 0o577 }));
    assert.ok(mayWriteDir(root, { uid: 5, gid: 5, mode: 0o500 }));
  });

  it('--socket-owner USER[:GROUP]: numbers, names, the primary group; junk refused', () => {
    assert.deepEqual(parseOwnerSpec('0'), { uid: 0, gid: 0 });
    assert.deepEqual(parseOwnerSpec('root:65534'), { uid: 0, gid: 65534 });
    assert.deepEqual(parseOwnerSpec('4242:4243'), { uid: 4242, gid: 4243 });
    assert.throws(() => parseOwnerSpec('4242'), /uid 4242 has no account to take a group from/);
    assert.throws(() => parseOwnerSpec('no-such-user-qnh'), /no such user/);
    assert.throws(() => parseOwnerSpec('root:no-such-group-qnh'), /no such group/);
    assert.throws(() => parseOwnerSpec('a:b:c'), /is not USER or USER:GROUP/);
  });
});

describe('control codec: the add-port "owner" field', () => {
  it('parsed when well formed, refused with a clear message otherwise', () => {
    assert.deepEqual(parseRequest('{"op":"add-port","socket":"/run/a.sock","owner":{"uid":1000,"gid":100}}'),
      { op: 'add-port', socket: '/run/a.sock', client: false, owner: { uid: 1000, gid: 100 } });
    for (const bad of ['1000', '[1000,100]', '{"uid":1000}', '{"uid":-1,"gid":0}', '{"uid":1.5,"gid":0}', '{"uid":4294967295,"gid":0}', '{"uid":"0","gid":0}']) {
      assert.throws(() => parseRequest(`{"op":"add-port","socket":"/a","owner":${bad},"id":7}`), (e: unknown) => e instanceof ControlError && e.id === 7 && /"owner"/.test(e.message), bad);
    }
    assert.throws(() => parseRequest('{"op":"add-port","socket":"/a","owner":{"uid":1,"gid":1,"pid":3}}'), /unknown field "pid" in "owner"/);
    assert.throws(() => parseRequest('{"op":"set-mode","port":1,"mode":"veb","owner":{"uid":1,"gid":1}}'), /unknown field "owner" for set-mode/);
  });
});

describe('memory tables against the limits (before anything is mapped)', () => {
  it('total size, region count and data-path views; O(regions)', () => {
    checkLimits([{ size: 4 * GiB }, { size: 60 * GiB }]);
    checkLimits([{ size: 128 * GiB }]);
    assert.throws(() => checkLimits([{ size: 2 ** 46 }]), (e: unknown) => e instanceof MemoryError && e.message === '64 TiB of guest memory; this switch maps at most 128 GiB per port (--max-guest-memory)');
    assert.throws(() => checkLimits([{ size: 64 * GiB }, { size: 64 * GiB + 4096 }]), /at most 128 GiB per port/);
    assert.throws(() => checkLimits(new Array(33).fill({ size: 4096 })), /33 regions; at most 32/);
    assert.throws(() => checkLimits(new Array(5).fill({ size: 4096 }), { maxBytes: GiB, maxRegions: 4 }), /5 regions; at most 4/);
    assert.throws(() => checkLimits([{ size: 2 * GiB }], { maxBytes: GiB, maxRegions: 8 }), /2 GiB of guest memory; this switch maps at most 1 GiB/);
    // 21 regions of 6 GiB + 1 byte fit 128 GiB but need 4 views each: more than the data path has.
    assert.equal(viewsNeeded(new Array(21).fill({ size: 6 * GiB + 1 })), 84);
    assert.throws(() => checkLimits(new Array(21).fill({ size: 6 * GiB + 1 })), /needs 84 views of 2 GiB; the data path has 64/);
    assert.equal(DEFAULT_MEMORY_LIMITS.maxRegions, 32);
  });

  it('sizes in flags and messages', () => {
    assert.equal(parseByteSize('8M'), 8 * 2 ** 20);
    assert.equal(parseByteSize('64G'), 64 * GiB);
    assert.equal(parseByteSize('64GiB'), 64 * GiB);
    assert.equal(parseByteSize('1t'), 2 ** 40);
    assert.equal(parseByteSize('4096'), 4096);
    for (const bad of ['', 'G', '1P', '-1G', '1.5G', '9'.repeat(30)]) assert.equal(parseByteSize(bad), null, bad);
    assert.equal(formatBytes(2 ** 46), '64 TiB');
    assert.equal(formatBytes(16 * 2 ** 20), '16 MiB');
    assert.equal(formatBytes(3 * GiB + 1), '3.0 GiB');
  });
});

describe('mapping budget: how often an owner may have tables mapped', () => {
  it('a full bucket maps at once, then reservations queue behind each other; too long a wait is refused, reserving nothing', () => {
    let now = 0;
    const b = new MapBudget(64, 1, () => now); // 64 views, 1 view a second
    assert.equal(b.reserve(64), 0, 'a boot maps at once');
    assert.equal(b.reserve(10), 10_000, 'the next waits for its views');
    assert.equal(b.reserve(10), 20_000, 'and the one after it queues behind');
    assert.throws(() => b.reserve(64, 30_000), (e: unknown) => e instanceof MemoryError && /remapping guest memory too often: .*wait 84 s/.test(e.message));
    now = 20_000; // the 20 queued views are paid: the bucket is empty again
    assert.equal(b.reserve(1), 1000);
    now = 10_000_000; // long idle: refilled, never above capacity
    assert.equal(b.reserve(64), 0);
    assert.equal(b.reserve(1), 1000);
  });

  it('owners draw from a shared budget too: two tenants together wait as one would', () => {
    let now = 0;
    const shared = new MapBudget(100, 1, () => now);
    const alice = new MapBudget(64, 1, () => now, shared);
    const bob = new MapBudget(64, 1, () => now, shared);
    assert.equal(alice.reserve(64), 0);
    assert.equal(bob.reserve(30), 0, 'within both');
    assert.equal(bob.reserve(30), 24_000, 'bob\'s own budget has 34 left, the shared one 6: the shared one decides');
    assert.throws(() => alice.reserve(64), /wait 88 s/, 'refused ...');
    assert.equal(bob.reserve(1), 25_000, '... and nothing was reserved by the refusal');
  });

  it('defaults: one largest table (64 views) at once per owner, 128 GiB a minute; all tenants twice that', () => {
    assert.equal(MAP_BUDGET.capacity, 64);
    assert.equal(MAP_BUDGET.perSecond * 60, 64);
    assert.equal(SHARED_MAP_BUDGET.capacity, 128);
    assert.equal(SHARED_MAP_BUDGET.perSecond * 60, 128);
  });
});
