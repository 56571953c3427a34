// Packets per second through our vhost-user back-end and through DPDK's own
// (testpmd net_vhost ports), under identical load, in the same run:
// - bounce: testpmd with two virtio-user ports in io mode (--tx-first) keeps
//   frames circulating through the back-end's two switch ports. With the
//   default burst of 32, --tx-first puts only 32 frames on each loop, so the
//   rate is bound by the round trip (latency); 'bounce-full' starts with a
//   burst of 256 so that the rings stay full and the rate is the back-end's
//   throughput;
// - sink: virtio-user txonly into one port that consumes everything.
// Rates are read from the generator's per-second Rx-pps/Tx-pps lines (median
// of the measured seconds), so both back-ends are judged by the same meter.
import { execFileSync } from 'node:child_process';
import { mkdtempSync, readFileSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { Serve } from '../test/lib/serve.js';
import { Testpmd, handshakeFailed, type TestpmdOptions } from '../test/lib/testpmd.js';

export interface VhostRow {
  test: 'bounce' | 'bounce-full' | 'sink';
  frameBytes: number;
  backend: 'qemu-net-helper' | 'dpdk';
  mpps: number;
  gbps: number;
  rssMiB: number | null;
}

export interface VhostResult {
  /** Medians over the rounds. */
  rows: VhostRow[];
  /** Per test: the median of the rounds' ours / DPDK ratios. */
  ratios: { test: string; frameBytes: number; ratio: number }[];
  seconds: number;
  rounds: number;
  /** Every run, by round. */
  runs: (VhostRow & { round: number })[];
}

const sleep = (ms: number): Promise<void> => new Promise((r) => setTimeout(r, ms));

function median(xs: number[]): number {
  if (!xs.length) return 0;
  const s = [...xs].sort((a, b) => a - b);
  return s[Math.floor(s.length / 2)]!;
}

export function rssMiB(pid: number | undefined): number | null {
  if (!pid) return null;
  try {
    const m = /VmRSS:\s+(\d+) kB/.exec(readFileSync(`/proc/${pid}/status`, 'utf8'));
    return m ? Math.round(Number(m[1]) / 1024) : null;
  } catch { return null; }
}

/** Per-second rates from testpmd's periodic stats: per port, after the warm-up. */
export function rates(out: string, key: 'Rx-pps' | 'Tx-pps', ports: number, warm: number): number {
  const all = [...out.matchAll(new RegExp(`${key}:\\s+(\\d+)`, 'g'))].map((m) => Number(m[1]));
  let total = 0;
  for (let p = 0; p < ports; p++) {
    const mine = all.filter((_, i) => i % ports === p).slice(warm);
    total += median(mine);
  }
  return total;
}

async function generator(opts: TestpmdOptions, seconds: number): Promise<string> {
  for (let attempt = 0; ; attempt++) {
    const t = new Testpmd({ ...opts, prefix: `${opts.prefix}-${attempt}` });
    await t.waitFor(/Tx-pps/, 20000);
    await sleep(seconds * 1000);
    const r = await t.stop();
    if (!handshakeFailed(r.output) || attempt >= 2) return r.output;
  }
}

async function withOurs<T>(sockets: string[], fn: (pid: number | undefined) => Promise<T>): Promise<T> {
  // testpmd's --no-huge memory cannot be sealed: trust the generator.
  const s = new Serve([...sockets.flatMap((x) => ['--socket', x]), '--poll', 'busy', '--allow-unsealed-memory']);
  // Our busy worker on CPU 1, the generator's forwarding core on CPU 0.
  try {
    await s.ready(sockets);
    execFileSync('taskset', ['-a', '-p', '-c', '1', String(s.proc.pid)], { stdio: 'ignore' });
    return await fn(s.proc.pid);
  } finally {
    await s.stop();
  }
}

async function withDpdk<T>(sockets: string[], mode: 'io' | 'rxonly', fn: (pid: number | undefined) => Promise<T>): Promise<T> {
  const t = new Testpmd({
    vdevs: sockets.map((s, i) => `net_vhost${i},iface=${s},queues=1,client=0`),
    forwardMode: mode, lcores: '0@0,1@1', prefix: `qnh-anchor-${process.pid}`,
  });
  try {
    if (!(await t.waitFor(/Tx-pps|Rx-pps|Port statistics/, 20000))) throw new Error(`DPDK back-end did not start: ${t.output().slice(-2000)}`);
    return await fn(t.proc.pid);
  } finally {
    await t.stop();
  }
}

/** Median of the rows of one (test, frame, back-end) over the rounds. */
function medianRow(rows: VhostRow[]): VhostRow {
  const mpps = median(rows.map((r) => r.mpps));
  const r0 = rows[0]!;
  return { ...r0, mpps, gbps: (mpps * 1e6 * r0.frameBytes * 8) / 1e9, rssMiB: rows.at(-1)!.rssMiB };
}

/**
 * `rounds` > 1 repeats every test, ours and DPDK's back to back in each round
 * (so both meet the same machine), and reports medians: the rate of one run
 * swings by up to 2x on this shared VM, the ratio within a round much less.
 */
export async function benchVhostUser(seconds = 6, sizes = [64, 1518], rounds = 1): Promise<VhostResult> {
  const dir = mkdtempSync(join(tmpdir(), 'qnh-bench-vu-'));
  const raw: (VhostRow & { round: number })[] = [];
  const warm = 2;
  try {
    const a = join(dir, 'a.sock');
    const b = join(dir, 'b.sock');
    const bounces = [
      ...sizes.map((bytes) => ({ test: 'bounce' as const, bytes, burst: 32 })),
      ...sizes.map((bytes) => ({ test: 'bounce-full' as const, bytes, burst: 256 })),
    ];
    for (let round = 0; round < rounds; round++) {
      const record = (r: VhostRow): void => { raw.push({ ...r, round }); };
      for (const { test, bytes, burst } of bounces) {
        for (const backend of ['qemu-net-helper', 'dpdk'] as const) {
          const run = async (pid: number | undefined): Promise<void> => {
            let rss: number | null = null;
            const out = await generator({
              vdevs: [`net_virtio_user0,path=${a},queues=1`, `net_virtio_user1,path=${b},queues=1`],
              forwardMode: 'io', lcores: '0@1,1@0', prefix: `qnh-gen-${process.pid}`, pktLen: bytes, burst, extra: ['--tx-first'],
            }, seconds + warm).then((o) => { rss = rssMiB(pid); return o; });
            const pps = rates(out, 'Rx-pps', 2, warm);
            record({ test, frameBytes: bytes, backend, mpps: pps / 1e6, gbps: (pps * bytes * 8) / 1e9, rssMiB: rss });
          };
          if (backend === 'dpdk') await withDpdk([a, b], 'io', run);
          else await withOurs([a, b], run);
        }
      }
      for (const backend of ['qemu-net-helper', 'dpdk'] as const) {
        const run = async (pid: number | undefined): Promise<void> => {
          let rss: number | null = null;
          const out = await generator({ vdevs: [`net_virtio_user0,path=${a},queues=1`], forwardMode: 'txonly', lcores: '0@1,1@0', prefix: `qnh-gen-${process.pid}`, pktLen: 64 }, seconds + warm)
            .then((o) => { rss = rssMiB(pid); return o; });
          const pps = rates(out, 'Tx-pps', 1, warm);
          record({ test: 'sink', frameBytes: 64, backend, mpps: pps / 1e6, gbps: (pps * 64 * 8) / 1e9, rssMiB: rss });
        };
        if (backend === 'dpdk') await withDpdk([a], 'rxonly', run);
        else await withOurs([a], run);
      }
    }
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
  const rows: VhostRow[] = [];
  const ratios: VhostResult['ratios'] = [];
  for (const r of raw.filter((x) => x.backend === 'qemu-net-helper' && x.round === 0)) {
    const same = (x: VhostRow): boolean => x.test === r.test && x.frameBytes === r.frameBytes;
    const ours = raw.filter((x) => same(x) && x.backend === 'qemu-net-helper');
    const dpdk = raw.filter((x) => same(x) && x.backend === 'dpdk');
    rows.push(medianRow(ours));
    if (dpdk.length) rows.push(medianRow(dpdk));
    const perRound = ours.map((o) => [o, dpdk.find((d) => d.round === o.round)] as const)
      .filter(([, d]) => d !== undefined && d.mpps > 0).map(([o, d]) => o.mpps / d!.mpps);
    if (perRound.length) ratios.push({ test: r.test, frameBytes: r.frameBytes, ratio: median(perRound) });
  }
  return { rows, ratios, seconds, rounds, runs: raw };
}
