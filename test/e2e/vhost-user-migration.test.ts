// Live migration between two ports of the same switch: a TCG guest on port 0
// pings the uplink once a second; a second QEMU waits with -incoming on port
// 1; QMP `migrate` over a unix socket. The migration completes (the back-end
// offers LOG_ALL and logs every page it writes), the guest keeps pinging from
// the destination with at most 2 echo requests lost, and the switch learns
// the guest's MAC on the new port.
import assert from 'node:assert/strict';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, before, describe, it } from 'node:test';
import { guestSkipReason, startGuest, vhostUserNicArgs, type Guest } from '../lib/guest.js';
import { withNetNs } from '../lib/netns.js';
import { Qmp } from '../lib/qemu.js';
import { Serve } from '../lib/serve.js';

const skip = guestSkipReason() ?? false;
const MAC = '52:54:00:44:00:02';
// Pings at 1 s: ~10 before the migration (boot, learning, 5 s), the rest
// after it, from the destination: enough to count a loss of 2 and to see the
// guest go on sending. Under load the migration takes longer, not the pings.
const COUNT = 25;

describe('live migration between two ports of the vhost-user switch', { skip }, () => {
  let dir: string;
  before(() => { dir = mkdtempSync(join(tmpdir(), 'qnh-mig-')); });
  after(() => rmSync(dir, { recursive: true, force: true }));

  it('QMP migrate while the guest pings the uplink: at most 2 lost, MAC learned on the new port', { timeout: 300_000 }, async (t) => {
    await withNetNs(async (ns) => {
      ns.ip('link', 'add', 'up0', 'type', 'veth', 'peer', 'name', 'far0');
      ns.ip('addr', 'add', '10.4.0.254/24', 'dev', 'far0');
      ns.ip('link', 'set', 'far0', 'up');
      ns.ip('link', 'set', 'up0', 'up');
      const [a, b] = [join(dir, 'src.sock'), join(dir, 'dst.sock')];
      const s = new Serve(['--socket', a, '--socket', b, '--uplink', 'up0', '--events'], ns);
      const guests: Guest[] = [];
      try {
        await s.ready([a, b]);
        // The same machine on both sides; the kernel command line only matters on the source.
        const settings = { mode: 'ping' as const, ip: '10.4.0.2/24', peer: '10.4.0.254', count: COUNT, interval: 1, deadline: COUNT + 30 };
        const qmpSrc = join(dir, 'qmp-src.sock');
        const qmpDst = join(dir, 'qmp-dst.sock');
        const mig = join(dir, 'mig.sock');
        const src = await startGuest({ ns, name: 'source', timeoutMs: 280_000, settings, args: [...vhostUserNicArgs(a, { mac: MAC }), '-qmp', `unix:${qmpSrc},server=on,wait=off`] });
        guests.push(src);
        const dst = await startGuest({ ns, name: 'destination', timeoutMs: 280_000, settings, args: [...vhostUserNicArgs(b, { mac: MAC }), '-qmp', `unix:${qmpDst},server=on,wait=off`, '-incoming', `unix:${mig}`] });
        guests.push(dst);
        await src.waitFor('READY', 120_000);
        await s.waitEvent((e) => e.event === 'mac-learned' && e.mac === MAC && e.port === 0, 60_000);
        // A few echo replies first, so the migration happens mid-stream.
        await new Promise((r) => setTimeout(r, 5000));
        const q = await Qmp.connect(qmpSrc);
        const r = await q.cmd('migrate', { uri: `unix:${mig}` });
        assert.ok(!('error' in r), `migrate: ${JSON.stringify(r)}`);
        const t0 = Date.now();
        let status = '';
        let info: Record<string, unknown> = {};
        while (Date.now() - t0 < 120_000) {
          info = ((await q.cmd('query-migrate')).return ?? {}) as Record<string, unknown>;
          status = String(info.status);
          if (status === 'completed' || status === 'failed' || status === 'cancelled') break;
          await new Promise((res) => setTimeout(res, 200));
        }
        assert.equal(status, 'completed', `migration: ${JSON.stringify(info)}\n${s.log().slice(-2000)}\n${src.stderr()}\n${dst.stderr()}`);
        t.diagnostic(`migration completed in ${Date.now() - t0} ms (downtime ${String(info['downtime'])} ms)`);
        q.close();
        // The guest now runs in the destination QEMU and finishes its pings there.
        const done = await dst.waitFor('DONE', 150_000);
        const out = dst.output();
        const m = /(\d+) packets transmitted, (\d+) packets received/.exec(out);
        assert.ok(m, `no ping summary on the destination console\n${out.slice(-2000)}`);
        const lost = Number(m[1]) - Number(m[2]);
        t.diagnostic(`destination: ${m[0]} (lost ${lost}), DONE at ${done.atMs} ms`);
        assert.ok(Number(m[1]) >= COUNT - 1, `the guest kept sending: ${m[0]}`);
        assert.ok(lost <= 2, `at most 2 echo requests lost: ${m[0]}`);
        const moved = s.events.find((e) => e.event === 'mac-learned' && e.mac === MAC && e.port === 1);
        assert.ok(moved, `MAC learned on the destination port: ${JSON.stringify(s.events.filter((e) => e.event === 'mac-learned'))}`);
        assert.equal(moved.moved, true);
      } finally {
        for (const g of guests) await g.kill();
        await s.stop();
      }
    });
  });
});
