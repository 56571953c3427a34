// A 4-port learning switch under load, ours against OVS-DPDK (NORMAL action),
// same generator, same run, one core each: testpmd with four virtio-user ports
// (fixed MACs 02:00:00:00:00:01..04) in mac forwarding mode, --tx-first. Frames
// received on port 0 leave port 1 rewritten to src=MAC(1), dst=MAC(0), and the
// other way round; ports 2 and 3 likewise. So every frame is unicast to a MAC
// that sits behind another switch port: the switch must learn all four MACs
// and forward by destination (after the first frames, which are flooded),
// and each MAC always enters from the same port (no moves). --burst=256 makes
// --tx-first put 256 frames on each port, so the rings stay full however many
// frames a switch floods before it has learned: with testpmd's 32, OVS's
// flooding multiplied the frames in flight while ours learned at once, and a
// loaded machine then measured round-trip latency, not switching. The generator's
// forwarding core is on CPU 0; the whole switch process (our worker, or OVS's
// threads with its PMD) on CPU 1. testpmd's own net_vhost with 4 ports in io
// mode (a fixed patch 0<->1, 2<->3, no learning) is measured too as the
// no-switching ceiling, and is the comparison when OVS cannot run here.
import { execFileSync } from 'node:child_process';
import { mkdtempSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { Serve } from '../test/lib/serve.js';
import { Testpmd, handshakeFailed } from '../test/lib/testpmd.js';
import { dpdkRunDir, removeLater } from './leftovers.js';
import { OvsDpdk, ovsMissing } from './ovs-dpdk.js';
import { rates, rssMiB } from './vhost-user.js';

export type Switch4Backend = 'qemu-net-helper' | 'ovs-dpdk' | 'testpmd-net_vhost';

export interface Switch4Row {
  backend: Switch4Backend;
  frameBytes: number;
  mpps: number;
  gbps: number;
  rssMiB: number | null;
  /** Distinct MACs the switch learned (4 expected); null: it does not learn. */
  learnedMacs: number | null;
}

export interface Switch4Result {
  rows: Switch4Row[];
  ratios: { frameBytes: number; versus: Switch4Backend; ratio: number }[];
  /** Why OVS-DPDK was not measured, in its own words; null when it was. */
  ovsUnavailable: string | null;
  seconds: number;
  rounds: number;
}

const PORTS = 4;
const WARM = 2;
const BURST = 256;
const MACS = Array.from({ length: PORTS }, (_, i) => `02:00:00:00:00:0${i + 1}`);
/** testpmd pairs ports 0<->1, 2<->3: frames sent on port p go to the MAC of its partner. */
const PEER = (p: number): number => p ^ 1;

const sleep = (ms: number): Promise<void> => new Promise((r) => setTimeout(r, ms));

/** Runs the generator for warm-up + seconds; retries a failed handshake or a start where nothing circulates. */
async function drive(sockets: string[], bytes: number, seconds: number, tag: string): Promise<number> {
  for (let attempt = 0; ; attempt++) {
    const prefix = `qnh-sw4-gen-${process.pid}-${tag}-${attempt}`;
    const forget = removeLater(dpdkRunDir(prefix));
    const t = new Testpmd({
      vdevs: sockets.map((s, i) => `net_virtio_user${i},path=${s},queues=1,mac=${MACS[i]}`),
      forwardMode: 'mac', lcores: '0@1,1@0', prefix, pktLen: bytes, burst: BURST,
      extra: ['--tx-first', ...MACS.map((_, p) => `--eth-peer=${p},${MACS[PEER(p)]}`)],
    });
    let out = '';
    try {
      if (await t.waitFor(/Tx-pps/, 20000)) await sleep((seconds + WARM) * 1000);
    } finally {
      out = (await t.stop()).output;
      forget();
    }
    const pps = rates(out, 'Rx-pps', PORTS, WARM);
    if ((pps > 0 && !handshakeFailed(out)) || attempt >= 2) {
      if (pps === 0) process.stderr.write(`switch4 ${tag}: no frames circulated; generator said:\n${out.slice(-1500)}\n`);
      return pps;
    }
  }
}

function row(backend: Switch4Backend, frameBytes: number, pps: number, rss: number | null, learnedMacs: number | null): Switch4Row {
  return { backend, frameBytes, mpps: pps / 1e6, gbps: (pps * frameBytes * 8) / 1e9, rssMiB: rss, learnedMacs };
}

async function ours(dir: string, bytes: number, seconds: number): Promise<Switch4Row> {
  const sockets = MACS.map((_, i) => join(dir, `p${i}.sock`));
  // testpmd's --no-huge memory cannot be sealed: trust the generator.
  const s = new Serve([...sockets.flatMap((x) => ['--socket', x]), '--poll', 'busy', '--allow-unsealed-memory', '--events']);
  try {
    await s.ready(sockets);
    execFileSync('taskset', ['-a', '-p', '-c', '1', String(s.proc.pid)], { stdio: 'ignore' });
    const pps = await drive(sockets, bytes, seconds, `ours-${bytes}`);
    const rss = rssMiB(s.proc.pid);
    const learned = new Set(s.events.filter((e) => e.event === 'mac-learned' && e.mac && MACS.includes(e.mac)).map((e) => e.mac));
    return row('qemu-net-helper', bytes, pps, rss, learned.size);
  } finally {
    await s.stop();
  }
}

async function ovs(bytes: number, seconds: number): Promise<Switch4Row> {
  const o = await OvsDpdk.start(PORTS, 1);
  try {
    const pps = await drive(o.sockets, bytes, seconds, `ovs-${bytes}`);
    const rss = rssMiB(o.pid);
    const learned = new Set(o.learnedMacs().filter((m) => MACS.includes(m)));
    const mtu = o.interfaceStats().reduce((n, x) => n + x.mtuDrops, 0);
    if (mtu > 0) process.stderr.write(`switch4 ovs ${bytes} B: ${mtu} frames dropped by OVS for exceeding the MTU\n`);
    return row('ovs-dpdk', bytes, pps, rss, learned.size);
  } finally {
    await o.stop();
  }
}

async function netVhost(dir: string, bytes: number, seconds: number): Promise<Switch4Row> {
  const sockets = MACS.map((_, i) => join(dir, `v${i}.sock`));
  const prefix = `qnh-sw4-anchor-${process.pid}`;
  const forget = removeLater(dpdkRunDir(prefix));
  const t = new Testpmd({
    vdevs: sockets.map((s, i) => `net_vhost${i},iface=${s},queues=1,client=0`),
    forwardMode: 'io', lcores: '0@0,1@1', prefix,
  });
  try {
    if (!(await t.waitFor(/Tx-pps|Rx-pps|Port statistics/, 20000))) throw new Error(`testpmd net_vhost did not start: ${t.output().slice(-2000)}`);
    const pps = await drive(sockets, bytes, seconds, `vhost-${bytes}`);
    return row('testpmd-net_vhost', bytes, pps, rssMiB(t.proc.pid), null);
  } finally {
    await t.stop();
    forget();
  }
}

/** The round with the median rate; MACs learned: the fewest any round saw (a round that failed to learn shows). */
function medianRow(samples: Switch4Row[]): Switch4Row {
  const sorted = [...samples].sort((a, b) => a.mpps - b.mpps);
  const mid = sorted[Math.floor(sorted.length / 2)]!;
  const learned = samples.map((x) => x.learnedMacs).filter((x): x is number => x !== null);
  return { ...mid, learnedMacs: learned.length ? Math.min(...learned) : null };
}

/** `rounds` interleaved rounds (ours, OVS, net_vhost per frame size), so load that comes and goes hits all alike. */
export async function benchSwitch4(seconds = 6, rounds = 1, sizes = [64, 1518]): Promise<Switch4Result> {
  const dir = mkdtempSync(join(tmpdir(), 'qnh-bench-sw4-'));
  const forgetDir = removeLater(dir);
  const samples: Switch4Row[] = [];
  let ovsUnavailable = ovsMissing();
  try {
    for (let round = 0; round < rounds; round++) {
      for (const bytes of sizes) {
        samples.push(await ours(dir, bytes, seconds));
        if (!ovsUnavailable) {
          try {
            samples.push(await ovs(bytes, seconds));
          } catch (e) {
            ovsUnavailable = (e as Error).message;
          }
        }
        samples.push(await netVhost(dir, bytes, seconds));
      }
    }
  } finally {
    forgetDir();
  }
  const rows: Switch4Row[] = [];
  for (const bytes of sizes) {
    for (const backend of ['qemu-net-helper', 'ovs-dpdk', 'testpmd-net_vhost'] as const) {
      const mine = samples.filter((x) => x.backend === backend && x.frameBytes === bytes);
      if (mine.length) rows.push(medianRow(mine));
    }
  }
  const ratios: Switch4Result['ratios'] = [];
  for (const r of rows.filter((x) => x.backend === 'qemu-net-helper')) {
    for (const other of rows.filter((x) => x.backend !== 'qemu-net-helper' && x.frameBytes === r.frameBytes && x.mpps > 0)) {
      ratios.push({ frameBytes: r.frameBytes, versus: other.backend, ratio: r.mpps / other.mpps });
    }
  }
  return { rows, ratios, ovsUnavailable, seconds, rounds };
}
