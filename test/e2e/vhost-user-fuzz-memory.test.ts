// Hostile memory tables on port 1 of a real `vhost-user serve` (see
// hostile-bench.ts): a region larger than its memfd, a mapping above 4 GiB.
// Each once killed the back-end.
import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import { closeFd } from '../../src/sys/libc.js';
import * as F from '../lib/frontend-codec.js';
import { Req, type MemRegion } from '../../src/vhost-user/protocol/index.js';
import { Bench, benchDir } from '../lib/hostile-bench.js';
import { memfdCreate, sleep } from '../lib/vhost-frontend.js';

describe('vhost-user back-end against hostile front-ends: memory tables', () => {
  const dir = benchDir();

  // Regression (fixed in fe56fbd); before it: dataplane/port.ts WorkerPort.setMemory maps
  // mmap_offset+size without checking the fd size; the first access past EOF is SIGBUS and kills
  // the process
  it('a memory region larger than its memfd, with a buffer in the part past EOF', async () => {
    const bench = await Bench.start(dir(), 'eof', 'event');
    try {
      const h = bench.connect1();
      await h.handshake({ memory: { name: 'qnh-eof' } });
      const regions = h.guest!.regions();
      regions[0]!.memorySize = 64n << 20n; // the memfd has 4 MiB
      await h.ack(Req.SET_MEM_TABLE, F.memTable(regions), h.guest!.fds()).catch(() => undefined);
      const [id] = h.tx.take(1);
      h.tx.q.setDesc(id!, h.guest!.gpaBase + (32 << 20), 100, 0, 0);
      h.tx.publishRaw(id!);
      await sleep(300);
      bench.assertAlive('TX buffer past the end of the memfd');
    } finally {
      bench.kill();
    }
  });

  // Regression (fixed in fe56fbd); before it: port.ts maps mmap_offset+size as one koffi.view; views
  // above 4 GiB make koffi abort() the process (FATAL ERROR: Error::New napi_get_last_error_info),
  // so any guest needing a >4 GiB mapping kills the back-end
  it('a guest with more than 4 GiB in one mapping (QEMU: 6 GiB RAM, high part at mmap_offset 2 GiB)', async () => {
    const bench = await Bench.start(dir(), 'big', 'event');
    const fd = memfdCreate('qnh-big', 6 * 2 ** 30);
    try {
      const h = bench.connect1();
      h.prepareGuest({ memory: { name: 'qnh-big-fe' } });
      await h.set(Req.SET_OWNER);
      await h.negotiateProtocol();
      await h.setFeatures();
      const regions: MemRegion[] = [
        { guestPhysAddr: 0n, memorySize: 2n ** 31n, userspaceAddr: 0x7f00_0000_0000n, mmapOffset: 0n },
        { guestPhysAddr: 2n ** 32n, memorySize: 2n ** 32n, userspaceAddr: 0x7f00_8000_0000n, mmapOffset: 2n ** 31n },
      ];
      const r = await h.ack(Req.SET_MEM_TABLE, F.memTable(regions), [fd, fd]).then((v) => `ack ${v}`, (e: Error) => e.message);
      bench.assertAlive(`6 GiB memory table (${r})`);
      assert.equal(r, 'ack 0', 'a legitimate memory table is accepted');
    } finally {
      closeFd(fd);
      bench.kill();
    }
  });
});
