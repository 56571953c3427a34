// The broker's bounds as pure bookkeeping: who may open a connection, who may
// make another endpoint, who runs next (per-user queues served round-robin),
// one log line per kind of refusal per window, and the checks the broker makes
// on /proc/PID/status before taking an fd out of a client.
import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import { checkLimits, connectionRefusal, DEFAULT_LIMITS, endpointRefusal, fitToFdLimit, RefusalLog, RunQueue, type BrokerLimits } from '../../../src/broker/limits.js';
import { foreignIds, parseStatusIds } from '../../../src/broker/target-check.js';

const L: BrokerLimits = { ...DEFAULT_LIMITS, maxConnections: 10, maxConnectionsPerUser: 3, rootReserveConnections: 2, maxRunning: 3, maxRunningPerUser: 2, maxEndpoints: 5, maxEndpointsPerUser: 2 };

describe('broker limits', () => {
  it('connections: per user, then the total minus the root reserve; root only the total', () => {
    assert.equal(connectionRefusal(L, 1000, { total: 0, ofUser: 2 }), null);
    assert.match(connectionRefusal(L, 1000, { total: 3, ofUser: 3 })!, /uid 1000 has 3 connections open \(--max-connections-per-user\)/);
    assert.equal(connectionRefusal(L, 1000, { total: 7, ofUser: 0 }), null);
    assert.match(connectionRefusal(L, 1000, { total: 8, ofUser: 0 })!, /the rest kept for root/);
    assert.equal(connectionRefusal(L, 0, { total: 9, ofUser: 9 }), null);
    assert.match(connectionRefusal(L, 0, { total: 10, ofUser: 10 })!, /10 connections open/);
  });
  it('endpoints: per user and in all; root is not bounded', () => {
    assert.equal(endpointRefusal(L, 1000, { total: 4, ofUser: 1 }), null);
    assert.match(endpointRefusal(L, 1000, { total: 4, ofUser: 2 })!, /uid 1000 has 2 endpoints/);
    assert.match(endpointRefusal(L, 1000, { total: 5, ofUser: 0 })!, /serves 5 endpoints/);
    assert.equal(endpointRefusal(L, 0, { total: 500, ofUser: 500 }), null);
  });
  it('checks every bound and fits the connections to the fd limit', () => {
    assert.equal(checkLimits(DEFAULT_LIMITS), null);
    assert.match(checkLimits({ ...L, maxRunning: 0 })!, /maxRunning must be a positive integer/);
    assert.match(checkLimits({ ...L, rootReserveConnections: 10 })!, /reserve/);
    const fit = fitToFdLimit({ ...DEFAULT_LIMITS, maxConnections: 100_000 }, 20_000);
    assert.ok(fit.maxConnections < 20_000 - 256 && fit.maxConnections > 10_000, String(fit.maxConnections));
    assert.equal(checkLimits(fit), null);
    assert.equal(fitToFdLimit(DEFAULT_LIMITS, 1 << 20), DEFAULT_LIMITS);
  });
  it('runs at most the per-user and global bounds; frees go round-robin to the users waiting', () => {
    const q = new RunQueue<string>(L);
    assert.deepEqual(q.push(7, 'a1'), ['a1']);
    assert.deepEqual(q.push(7, 'a2'), ['a2']);
    assert.deepEqual(q.push(7, 'a3'), [], 'user 7 is at its own bound');
    assert.deepEqual(q.push(8, 'b1'), ['b1'], 'another user is not held up by user 7');
    assert.deepEqual(q.push(9, 'c1'), [], 'global bound of 3');
    assert.deepEqual(q.push(0, 'root'), ['root'], 'root does not wait');
    assert.equal(q.runningTotal, 4);
    q.finish(0);
    // A slot of user 7 frees: user 9 waited behind the global bound and gets it before 7's third.
    assert.deepEqual(q.finish(7), ['c1']);
    assert.deepEqual(q.finish(8), ['a3']);
    assert.equal(q.drop(7, 'a3'), false, 'running, not waiting');
    assert.deepEqual(q.push(8, 'b2'), []);
    assert.equal(q.drop(8, 'b2'), true);
    assert.equal(q.waitingOf(8), 0);
  });
  it('logs one line per kind of refusal per window, counting the rest into the next', () => {
    const lines: string[] = [];
    let now = 0;
    const r = new RefusalLog((l) => lines.push(l), 10_000, () => now);
    for (let i = 0; i < 15_000; i++) r.note('conn:7', 'refused uid 7');
    r.note('conn:8', 'refused uid 8');
    assert.deepEqual(lines, ['refused uid 7', 'refused uid 8']);
    now = 10_000;
    r.note('conn:7', 'refused uid 7');
    assert.equal(lines[2], 'refused uid 7 (and 14999 more refusals like it since the last such line)');
  });
});

describe('broker: whose process an fd may be taken from (/proc/PID/status)', () => {
  const status = (uid: string, gid: string): string => `Name:\tqemu\nUmask:\t0022\nState:\tS (sleeping)\nTgid:\t42\nPid:\t42\nPPid:\t1\nUid:\t${uid}\nGid:\t${gid}\nFDSize:\t64\nGroups:\t27 100\n`;
  it('parses real, effective, saved and fs ids', () => {
    assert.deepEqual(parseStatusIds(status('1000\t1000\t1000\t1000', '100\t100\t100\t100')), { uids: [1000, 1000, 1000, 1000], gids: [100, 100, 100, 100] });
    assert.equal(parseStatusIds('Name:\tx\nUid:\t1\t2\n'), null);
    assert.equal(parseStatusIds(status('a\tb\tc\td', '1\t1\t1\t1')), null);
  });
  it("a setuid program's process, or one that is not dumpable, is not the caller's", () => {
    const me = { uid: 1000, gid: 100 };
    const ok = parseStatusIds(status('1000\t1000\t1000\t1000', '100\t100\t100\t100'))!;
    assert.equal(foreignIds(ok, 1000, me), null);
    assert.match(foreignIds(parseStatusIds(status('1000\t0\t0\t0', '100\t100\t100\t100'))!, 0, me)!, /uids are 1000\/0\/0\/0/);
    assert.match(foreignIds(parseStatusIds(status('1000\t1000\t1000\t1000', '100\t42\t42\t42'))!, 1000, me)!, /gids are 100\/42\/42\/42/);
    assert.match(foreignIds(ok, 0, me)!, /not dumpable/);
  });
});
