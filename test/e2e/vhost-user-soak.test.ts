// Opt-in soak (QNH_SOAK_SECONDS=600 node --test dist/test/e2e/vhost-user-soak.test.js):
// two TCG guests reaching each other through the switch while testpmd
// (virtio-user txonly) floods a third port the whole time. The back-end's
// resident memory must stay flat after the warm-up, and the guests must still
// reach each other at the end. Skipped in the default suite (it takes minutes).
import assert from 'node:assert/strict';
import { mkdtempSync, readFileSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, before, describe, it } from 'node:test';
import { guestSkipReason, startGuest, vhostUserNicArgs, type Guest } from '../lib/guest.js';
import { Serve } from '../lib/serve.js';
import { haveTestpmd, Testpmd } from '../lib/testpmd.js';

const SECONDS = Number(process.env.QNH_SOAK_SECONDS ?? 0);
const skip = SECONDS <= 0 ? 'opt-in: set QNH_SOAK_SECONDS (600 for the 10-minute soak)' : guestSkipReason() ?? (haveTestpmd() ? false : 'dpdk-testpmd is not installed');
const ip = (i: number): string => `10.5.0.${i + 1}`;

function rssKiB(pid: number): number {
  const m = /VmRSS:\s+(\d+) kB/.exec(readFileSync(`/proc/${pid}/status`, 'utf8'));
  return m ? Number(m[1]) : 0;
}

describe('vhost-user switch soak', { skip }, () => {
  let dir: string;
  before(() => { dir = mkdtempSync(join(tmpdir(), 'qnh-soak-')); });
  after(() => rmSync(dir, { recursive: true, force: true }));

  it(`two guests and testpmd load for ${SECONDS} s: flat RSS, guests still connected`, { timeout: (SECONDS + 300) * 1000 }, async (t) => {
    const socks = [0, 1, 2].map((i) => join(dir, `p${i}.sock`));
    // testpmd's --no-huge memory cannot be sealed: trusted here.
    const s = new Serve([...socks.flatMap((x) => ['--socket', x]), '--allow-unsealed-memory']);
    const guests: Guest[] = [];
    let load: Testpmd | undefined;
    try {
      await s.ready(socks);
      for (let i = 0; i < 2; i++) {
        guests.push(await startGuest({
          name: `soak${i}`, timeoutMs: (SECONDS + 280) * 1000, args: vhostUserNicArgs(socks[i]!, { mac: `52:54:00:55:00:0${i + 1}` }),
          settings: { mode: 'serve', ip: `${ip(i)}/24`, wait: SECONDS + 240, watch: ip(1 - i) },
        }));
      }
      const deadline = Date.now() + 180_000;
      while (!guests.every((g, i) => g.reach(ip(1 - i)) === 'up')) {
        assert.ok(Date.now() < deadline, 'guests reach each other before the load starts');
        await new Promise((r) => setTimeout(r, 500));
      }
      // Every frame goes through the switch (peek, learn, decide) but is
      // addressed to testpmd's own MAC, learned on its own port: filtered,
      // so the slow TCG guests are not buried under it.
      load = new Testpmd({
        vdevs: [`net_virtio_user0,path=${socks[2]},queues=1,mac=02:00:00:00:00:77`], forwardMode: 'txonly', lcores: '0@0,1@1',
        prefix: `qnh-soak-${process.pid}`, extra: ['--eth-peer=0,02:00:00:00:00:77'],
      });
      assert.ok(await load.waitFor(/Tx-pps/, 30_000), load.output().slice(-2000));
      const pid = s.proc.pid!;
      const samples: number[] = [];
      const end = Date.now() + SECONDS * 1000;
      while (Date.now() < end) {
        await new Promise((r) => setTimeout(r, 10_000));
        samples.push(rssKiB(pid));
      }
      const warm = samples.slice(Math.min(3, samples.length - 1));
      const growth = Math.max(...warm) - Math.min(...warm);
      t.diagnostic(`RSS KiB every 10 s: ${samples.join(' ')}`);
      assert.ok(growth < 20 * 1024, `RSS grew by ${growth} KiB after the warm-up`);
      const r = await load.stop();
      load = undefined;
      t.diagnostic(`testpmd sent ${r.ports[0]?.txPackets ?? 0} frames`);
      // Still connected at the end: a fresh reachability change would show as DOWN.
      for (const [i, g] of guests.entries()) assert.equal(g.reach(ip(1 - i)), 'up', g.describe('reachability at the end'));
    } finally {
      await load?.stop();
      for (const g of guests) await g.kill();
      await s.stop();
    }
  });
});
