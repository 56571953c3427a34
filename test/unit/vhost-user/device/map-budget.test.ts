// The mapping budget as the device applies it, in-process over a socketpair
// with our own front-end and a counting data path: memory tables and dirty
// logs draw views from the owner's budget; past it a table is refused (its fds
// closed, nothing handed to the data path) while the connection goes on.
import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import { socketPair } from '../../../../src/sys/unix-fd.js';
import { zeroStats, type LogSpec, type PortDataplane, type PortStats, type QueueSpec, type RegionSpec } from '../../../../src/vhost-user/dataplane/api.js';
import { Connection } from '../../../../src/vhost-user/device/connection.js';
import { VhostUserNetDevice } from '../../../../src/vhost-user/device/device.js';
import { MapBudget } from '../../../../src/vhost-user/device/map-budget.js';
import { Req } from '../../../../src/vhost-user/protocol/index.js';
import * as F from '../../../lib/frontend-codec.js';
import { fdCount, memfdCreate, VhostFrontend } from '../../../lib/vhost-frontend.js';
import { closeFd } from '../../../../src/sys/libc.js';

/** Counts what the device asks the data path to map; does nothing else. */
class CountingDataplane implements PortDataplane {
  tables = 0;
  logs = 0;
  async setMemory(_r: RegionSpec[]): Promise<void> { this.tables++; }
  async setLog(_l: LogSpec): Promise<void> { this.logs++; }
  async startQueue(_q: number, _s: QueueSpec): Promise<void> { /* not started here */ }
  async stopQueue(): Promise<number> { return 0; }
  async setCall(): Promise<void> { /* nothing */ }
  async setEnabled(): Promise<void> { /* nothing */ }
  async injectFromGuest(): Promise<void> { /* nothing */ }
  async reset(): Promise<void> { /* nothing */ }
  stats(): PortStats { return zeroStats(); }
}

describe('mapping budget in the device', () => {
  it('tables and logs draw views; past the budget a table is refused, its fds closed, the connection kept', async () => {
    const [a, b] = socketPair();
    const dp = new CountingDataplane();
    // Three views, refilled one per 1000 s: no wait is short enough to be taken.
    const dev = new VhostUserNetDevice(dp, { queuePairs: 1, mapBudget: new MapBudget(3, 0.001) });
    const logs: string[] = [];
    const conn = new Connection(b, dev, (m) => logs.push(m));
    conn.start();
    const fe = new VhostFrontend(a);
    const mem = memfdCreate('qnh-budget', 4 << 20);
    try {
      await fe.set(Req.SET_OWNER);
      await fe.negotiateProtocol();
      const table = F.memTable([{ guestPhysAddr: 0n, memorySize: 4n << 20n, userspaceAddr: 0x7000_0000_0000n, mmapOffset: 0n }]);
      assert.equal(await fe.ack(Req.SET_MEM_TABLE, table, [mem]), 0n);
      assert.equal(await fe.ack(Req.SET_MEM_TABLE, table, [mem]), 0n);
      assert.equal(F.replyU64(await fe.call(Req.SET_LOG_BASE, F.logBase(4096n, 0n), [mem])), 0n);
      assert.deepEqual([dp.tables, dp.logs], [2, 1], 'three views mapped');
      const fds = fdCount('self');
      assert.notEqual(await fe.ack(Req.SET_MEM_TABLE, table, [mem]), 0n, 'the fourth view is refused');
      assert.equal(dp.tables, 2, 'nothing handed to the data path');
      assert.equal(fdCount('self'), fds, 'the refused table\'s fd is closed');
      assert.ok(logs.some((l) => /SET_MEM_TABLE refused: SET_MEM_TABLE: remapping guest memory too often/.test(l)), logs.join('\n'));
      assert.ok((await fe.callU64(Req.GET_FEATURES)) > 0n, 'the connection goes on');
    } finally {
      closeFd(mem);
      fe.close();
      await conn.done;
    }
  });
});
