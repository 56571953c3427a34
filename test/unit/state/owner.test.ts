// Owner identity (state/owner.ts): a process is named by pid and start time,
// so a reused pid is never taken for the owner; judged on states given.
import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import { judgeOwner, parseProcStat, type OwnerRef } from '../../../src/state/owner.js';

const qemu: OwnerRef = { pid: 4242, startTime: '1000' };

describe('owner identity', () => {
  it('alive only with the same start time; a reused pid, a missing or zombie process is gone; invisible is unknown', () => {
    assert.equal(judgeOwner(qemu, { alive: true, startTime: '1000' }), 'alive');
    assert.equal(judgeOwner(qemu, { alive: true, startTime: '2000' }), 'gone', 'the pid now belongs to a later process');
    assert.equal(judgeOwner(qemu, { alive: false }), 'gone');
    assert.equal(judgeOwner(qemu, { alive: 'unknown', reason: 'hidepid' }), 'unknown');
  });
});

describe('parseProcStat', () => {
  it('counts fields from the last parenthesis: a comm with spaces and parentheses is no trap', () => {
    const rest = (start: string) => `S 1 2 3 4 5 6 7 8 9 10 11 12 13 14 15 16 17 18 ${start} 20`;
    assert.deepEqual(parseProcStat(`4242 (qemu-system-x86) ${rest('1000')}`), { state: 'S', startTime: '1000' });
    assert.deepEqual(parseProcStat(`4242 (a) b) (c) ${rest('77')}`), { state: 'S', startTime: '77' });
    assert.equal(parseProcStat('4242 qemu S 1'), null);
    assert.equal(parseProcStat(`4242 (x) ${rest('1e3')}`), null);
  });
});
