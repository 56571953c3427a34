// What reaping before a request costs when nothing is in the way: records in
// a throwaway state directory (no kernel objects), reapConflicting timed per
// request for a few record counts. `node dist/bench/reap-cost.js`
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import type { HostContext } from '../src/backends/types.js';
import { ownNetns } from '../src/lifecycle/holders.js';
import { reapConflicting } from '../src/lifecycle/reap.js';
import { saveEndpoint } from '../src/state/endpoints.js';
import { ownerOf } from '../src/state/owner.js';

const ROUNDS = 200;

function measure(label: string, records: number, parent: string): void {
  const dir = mkdtempSync(join(tmpdir(), 'qnh-reap-cost-'));
  try {
    const owner = ownerOf(process.pid);
    for (let i = 0; i < records; i++) {
      saveEndpoint(dir, {
        version: 1, id: `ep-${i}`, createdAt: new Date().toISOString(), owner, watcher: null, mode: 'veb', kernel: 'macvtap',
        transport: 'macvtap', ifname: `macvtap${i}`, mac: null, mtu: 1500, devicePath: null, owned: [], lifetime: 'owner', uid: 0,
        info: { parent, state: 'active', netns: ownNetns() },
      });
    }
    const host = { stateDir: dir } as HostContext;
    const want = { dev: 'eth1', portsOfUid: 1000 };
    for (let i = 0; i < 20; i++) reapConflicting(want, host);
    const t = process.hrtime.bigint();
    for (let i = 0; i < ROUNDS; i++) reapConflicting(want, host);
    console.log(`${label}: ${(Number(process.hrtime.bigint() - t) / 1e6 / ROUNDS).toFixed(3)} ms per request`);
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
}

measure('no records', 0, 'eth2');
measure('10 records, none in the way', 10, 'eth2');
measure('100 records, none in the way', 100, 'eth2');
measure('100 records on the same device, owners alive', 100, 'eth1');
