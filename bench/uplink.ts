// Uplink kinds compared, same run, same generators, both directions, once
// through an AF_PACKET socket on a veth (--uplink) and once through a tap of
// ours on a bridge (--br), each in a throwaway namespace:
// - guest -> uplink: testpmd virtio-user txonly into one switch port whose
//   frames all go out of the uplink (unknown destination: flooded, and the
//   uplink is the only other port). Rate = frames the back-end took from the
//   guest per second (testpmd's Tx-pps median); written share from the uplink
//   counters.
// - uplink -> guest: testpmd txonly through a net_af_packet port on the far
//   end of a veth (the uplink itself, or a veth enslaved to the bridge),
//   frames addressed to the guest's MAC; the guest is testpmd virtio-user
//   rxonly on the switch port. Rate = the guest's Rx-pps median while the
//   sender runs; delivered share = guest RX / sender TX packets.
// The switch runs busy-polling on CPU 1; the testpmd forwarding cores on CPU 0
// (in the second direction sender and guest share it, the guest's rxonly loop
// being the cheaper of the two).
import { execFileSync } from 'node:child_process';
import { mkdtempSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { withNetNs, type NetNs } from '../test/lib/netns.js';
import { Serve } from '../test/lib/serve.js';
import { Testpmd, parseTestpmd } from '../test/lib/testpmd.js';
import { dpdkRunDir, removeLater } from './leftovers.js';

export type UplinkKind = 'packet' | 'tap';
export interface UplinkRow { kind: UplinkKind; frameBytes: number; mpps: number; writtenShare: number }
export interface UplinkInRow { kind: UplinkKind; frameBytes: number; offeredMpps: number; mpps: number; deliveredShare: number }
export interface UplinkResult { toUplink: UplinkRow[]; fromUplink: UplinkInRow[] }

const GUEST_MAC = '02:00:00:00:00:0a';
const WARM = 2;
const sleep = (ms: number): Promise<void> => new Promise((r) => setTimeout(r, ms));
const median = (xs: number[]): number => (xs.length ? [...xs].sort((a, b) => a - b)[Math.floor(xs.length / 2)]! : 0);

interface Lab { ns: NetNs; serve: Serve; sock: string; sender: string }

/** A namespace with the uplink of `kind`, our switch on it with one port; `sender` is where uplink-side frames enter. */
async function withLab<T>(dir: string, kind: UplinkKind, tag: string, fn: (lab: Lab) => Promise<T>): Promise<T> {
  return withNetNs(async (ns) => {
    let uplinkArgs: string[];
    ns.ip('link', 'add', 'up0', 'type', 'veth', 'peer', 'name', 'far0');
    for (const l of ['up0', 'far0']) ns.ip('link', 'set', l, 'mtu', '9000', 'up');
    if (kind === 'packet') {
      uplinkArgs = ['--uplink', 'up0'];
    } else {
      ns.addBridge('br0', undefined, 9000);
      ns.ip('link', 'set', 'up0', 'master', 'br0');
      uplinkArgs = ['--br', 'br0'];
    }
    const sock = join(dir, `${kind}-${tag}.sock`);
    const serve = new Serve(['--socket', sock, ...uplinkArgs, '--poll', 'busy', '--allow-unsealed-memory', '--events'], ns);
    try {
      await serve.ready([sock]);
      execFileSync('taskset', ['-a', '-p', '-c', '1', String(serve.proc.pid)], { stdio: 'ignore' });
      const tap = /uplink: tap (\S+) on bridge/.exec(serve.log())?.[1];
      // A bridge drops frames above its egress port's MTU: our tap must take 1518-byte frames too.
      if (tap) ns.ip('link', 'set', tap, 'mtu', '9000');
      return await fn({ ns, serve, sock, sender: 'far0' });
    } finally {
      await serve.stop();
    }
  }, 'qnhb');
}

async function toUplink(lab: Lab, kind: UplinkKind, frameBytes: number, seconds: number): Promise<UplinkRow> {
  const prefix = `qnh-up-${process.pid}`;
  const forget = removeLater(dpdkRunDir(prefix));
  const t = new Testpmd({ vdevs: [`net_virtio_user0,path=${lab.sock},queues=1`], forwardMode: 'txonly', lcores: '0@1,1@0', prefix, pktLen: frameBytes });
  let pps = 0;
  try {
    await t.waitFor(/Tx-pps/, 20000);
    await sleep((seconds + WARM) * 1000);
  } finally {
    pps = median((await t.stop()).txPps.slice(WARM));
    forget();
  }
  await lab.serve.stop();
  const m = /uplink counters: (\{.*\})/.exec(lab.serve.log());
  const st = m ? (JSON.parse(m[1]!) as { stats: { txFrames: number; txDropped: number } }).stats : { txFrames: 0, txDropped: 1 };
  return { kind, frameBytes, mpps: pps / 1e6, writtenShare: st.txFrames / Math.max(1, st.txFrames + st.txDropped) };
}

async function fromUplink(lab: Lab, kind: UplinkKind, frameBytes: number, seconds: number): Promise<UplinkInRow> {
  const gPrefix = `qnh-upin-guest-${process.pid}`;
  const sPrefix = `qnh-upin-send-${process.pid}`;
  const forget = [removeLater(dpdkRunDir(gPrefix)), removeLater(dpdkRunDir(sPrefix))];
  const guest = new Testpmd({ vdevs: [`net_virtio_user0,path=${lab.sock},queues=1,mac=${GUEST_MAC}`], forwardMode: 'rxonly', lcores: '0@1,1@0', prefix: gPrefix });
  let sender: Testpmd | null = null;
  try {
    if (!(await guest.waitFor(/Rx-pps/, 20000))) throw new Error(`guest testpmd did not start: ${guest.output().slice(-1500)}`);
    await lab.serve.waitEvent((e) => e.event === 'ready' && e.port === 0, 20000);
    sender = new Testpmd({
      vdevs: [`net_af_packet0,iface=${lab.sender}`], forwardMode: 'txonly', lcores: '0@1,1@0', prefix: sPrefix,
      pktLen: frameBytes, netns: lab.ns.name, extra: [`--eth-peer=0,${GUEST_MAC}`],
    });
    if (!(await sender.waitFor(/Tx-pps/, 20000))) throw new Error(`sender testpmd did not start: ${sender.output().slice(-1500)}`);
    await sleep(WARM * 1000);
    const from = guest.output().length; // the guest's stats printed while the sender is warm
    await sleep(seconds * 1000);
    const window = guest.output().slice(from);
    const sent = await sender.stop();
    sender = null;
    await sleep(500); // let the switch hand over what it still holds
    const got = await guest.stop();
    const sentPackets = sent.ports[0]?.txPackets ?? 0;
    const gotPackets = got.ports[0]?.rxPackets ?? 0;
    return {
      kind, frameBytes, offeredMpps: median(sent.txPps.slice(WARM)) / 1e6,
      mpps: median(parseTestpmd(window).rxPps) / 1e6, deliveredShare: gotPackets / Math.max(1, sentPackets),
    };
  } finally {
    if (sender) await sender.stop();
    await guest.stop();
    for (const f of forget) f();
  }
}

export async function benchUplink(seconds = 5, sizes = [64, 1518]): Promise<UplinkResult> {
  const dir = mkdtempSync(join(tmpdir(), 'qnh-bench-up-'));
  const forgetDir = removeLater(dir);
  const result: UplinkResult = { toUplink: [], fromUplink: [] };
  try {
    for (const frameBytes of sizes) {
      for (const kind of ['packet', 'tap'] as const) {
        result.toUplink.push(await withLab(dir, kind, `out-${frameBytes}`, (lab) => toUplink(lab, kind, frameBytes, seconds)));
        result.fromUplink.push(await withLab(dir, kind, `in-${frameBytes}`, (lab) => fromUplink(lab, kind, frameBytes, seconds)));
      }
    }
  } finally {
    forgetDir();
  }
  return result;
}
