// Uplink kinds compared, same run, same generator: testpmd virtio-user
// txonly into one switch port whose frames all go out of the uplink (unknown
// destination: flooded, and the uplink is the only other port), once through
// an AF_PACKET socket on a veth (--uplink) and once through a tap of ours on
// a bridge (--br). Rate = frames the back-end took from the guest per second
// (testpmd's Tx-pps median); written/dropped from the uplink counters.
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { withNetNs } from '../test/lib/netns.js';
import { Serve } from '../test/lib/serve.js';
import { Testpmd } from '../test/lib/testpmd.js';

export interface UplinkRow { kind: 'packet' | 'tap'; frameBytes: number; mpps: number; writtenShare: number }

const sleep = (ms: number): Promise<void> => new Promise((r) => setTimeout(r, ms));
const median = (xs: number[]): number => (xs.length ? [...xs].sort((a, b) => a - b)[Math.floor(xs.length / 2)]! : 0);

export async function benchUplink(seconds = 5, sizes = [64, 1518]): Promise<UplinkRow[]> {
  const dir = mkdtempSync(join(tmpdir(), 'qnh-bench-up-'));
  const rows: UplinkRow[] = [];
  try {
    for (const frameBytes of sizes) {
      for (const kind of ['packet', 'tap'] as const) {
        await withNetNs(async (ns) => {
          let uplinkArgs: string[];
          if (kind === 'packet') {
            ns.ip('link', 'add', 'up0', 'type', 'veth', 'peer', 'name', 'far0');
            for (const l of ['up0', 'far0']) ns.ip('link', 'set', l, 'mtu', '9000', 'up');
            uplinkArgs = ['--uplink', 'up0'];
          } else {
            ns.addBridge('br0', undefined, 9000);
            uplinkArgs = ['--br', 'br0'];
          }
          const sock = join(dir, `${kind}-${frameBytes}.sock`);
          const s = new Serve(['--socket', sock, ...uplinkArgs, '--poll', 'busy', '--allow-unsealed-memory'], ns);
          try {
            await s.ready([sock]);
            const t = new Testpmd({ vdevs: [`net_virtio_user0,path=${sock},queues=1`], forwardMode: 'txonly', lcores: '0@1,1@0', prefix: `qnh-up-${process.pid}`, pktLen: frameBytes });
            await t.waitFor(/Tx-pps/, 20000);
            await sleep((seconds + 2) * 1000);
            const r = await t.stop();
            const pps = median(r.txPps.slice(2));
            await s.stop();
            const m = /uplink counters: (\{.*\})/.exec(s.log());
            const st = m ? (JSON.parse(m[1]!) as { stats: { txFrames: number; txDropped: number } }).stats : { txFrames: 0, txDropped: 1 };
            rows.push({ kind, frameBytes, mpps: pps / 1e6, writtenShare: st.txFrames / Math.max(1, st.txFrames + st.txDropped) });
          } finally {
            await s.stop();
          }
        }, 'qnhb');
      }
    }
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
  return rows;
}
