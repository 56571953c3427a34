// `npm run bench`: every benchmark, each against its real alternative in the
// same run. Prints Markdown tables (pasted into README) and writes JSON to
// bench/results/latest.json. Select with arguments: helper, broker, vhost-user, switch4, uplink, offload.
import { mkdirSync, readFileSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { ROOT } from '../test/lib/paths.js';
import { benchBrokerLatency } from './broker-latency.js';
import { benchHelperLatency, type LatencyResult } from './helper-latency.js';
import { benchSwitch4 } from './switch-4port.js';
import { benchTcpOffload } from './tcp-offload.js';
import { benchUplink, type UplinkBackend, type UplinkDirection } from './uplink.js';
import { benchVhostUser } from './vhost-user.js';

const which = new Set(process.argv.slice(2));
// Ctrl-C or a kill ends through process.exit, so the 'exit' handlers that give
// back namespaces, hugepages and OVS daemons run.
for (const [sig, n] of [['SIGINT', 2], ['SIGTERM', 15]] as const) process.once(sig, () => process.exit(128 + n));
const all = which.size === 0;
const results: Record<string, unknown> = { date: new Date().toISOString(), node: process.version };

function printLatency(title: string, r: LatencyResult, ratios: string): void {
  console.log(`\n### ${title}\n`);
  console.log('| program | median ms | p10 | p90 | runs |\n|---|---|---|---|---|');
  for (const row of r.rows) console.log(`| ${row.name} | ${row.medianMs} | ${row.p10Ms} | ${row.p90Ms} | ${row.runs} |`);
  console.log(`\n${ratios}`);
}

if (all || which.has('helper')) {
  const r = await benchHelperLatency(Number(process.env.BENCH_ROUNDS ?? 40));
  results.helperLatency = r;
  printLatency('Helper exec-to-exit (fd received and checked with TUNGETIFF)', r,
    `qemu-net-helper / node -e 0 = ${r.ratioToNode}x (goal <= 1.25x); qemu-net-helper / qemu-bridge-helper = ${r.ratioToQbh ?? 'n/a'}x`);
}

if (all || which.has('broker')) {
  const r = await benchBrokerLatency(Number(process.env.BENCH_ROUNDS ?? 40));
  results.brokerLatency = r;
  printLatency('Unprivileged helper exec-to-exit (uid 65534; fd received and checked with TUNGETIFF)', r,
    `broker client / node -e 0 = ${r.ratioToNode}x (goal <= 1.25x, aim 1.1x); broker client / setuid qemu-bridge-helper = ${r.ratioToQbh ?? 'n/a'}x`);
}

if (all || which.has('vhost-user')) {
  const r = await benchVhostUser(Number(process.env.BENCH_SECONDS ?? 6), [64, 1518], Number(process.env.BENCH_VHOST_ROUNDS ?? 1));
  results.vhostUser = r;
  console.log(`\n### vhost-user back-end vs DPDK testpmd net_vhost (same generator, same run; median of ${r.rounds} round(s), ratio: median of the per-round ratios)\n`);
  console.log('| test | frame B | back-end | Mpps | Gbit/s | RSS MiB |\n|---|---|---|---|---|---|');
  for (const row of r.rows) console.log(`| ${row.test} | ${row.frameBytes} | ${row.backend} | ${row.mpps.toFixed(2)} | ${row.gbps.toFixed(2)} | ${row.rssMiB ?? '-'} |`);
  console.log('');
  for (const x of r.ratios) console.log(`${x.test} ${x.frameBytes} B: qemu-net-helper / DPDK = ${x.ratio.toFixed(2)}`);
}

if (all || which.has('switch4')) {
  const r = await benchSwitch4(Number(process.env.BENCH_SECONDS ?? 6), Number(process.env.BENCH_SWITCH_ROUNDS ?? 1));
  results.switch4 = r;
  console.log(`\n### 4-port learning switch: ours vs OVS-DPDK (NORMAL) and testpmd net_vhost (same generator, same run, one core each; median of ${r.rounds} round(s))\n`);
  console.log('| back-end | frame B | Mpps | Gbit/s | MACs learned | RSS MiB |\n|---|---|---|---|---|---|');
  for (const row of r.rows) console.log(`| ${row.backend} | ${row.frameBytes} | ${row.mpps.toFixed(2)} | ${row.gbps.toFixed(2)} | ${row.learnedMacs ?? 'no learning'} | ${row.rssMiB ?? '-'} |`);
  console.log('');
  for (const x of r.ratios) console.log(`${x.frameBytes} B: qemu-net-helper / ${x.versus} = ${x.ratio.toFixed(2)}`);
  if (r.ovsUnavailable) console.log(`\nOVS-DPDK not measured: ${r.ovsUnavailable}`);
  else console.log('\n(OVS-DPDK RSS leaves out its 512 MiB of hugepages, dpdk-socket-mem.)');
}

if (all || which.has('uplink')) {
  const backends = (process.env.BENCH_UPLINK_BACKENDS ?? 'qnh-packet,qnh-ringtx,dpdk,dpdk-afxdp,ovs-dpdk,ovs-afxdp,qnh-tap').split(',') as UplinkBackend[];
  const directions = (process.env.BENCH_UPLINK_DIRECTIONS ?? 'out,in').split(',') as UplinkDirection[];
  const sizes = (process.env.BENCH_UPLINK_SIZES ?? '64,1514').split(',').map(Number);
  const r = await benchUplink(Number(process.env.BENCH_SECONDS ?? 5), sizes, Number(process.env.BENCH_UPLINK_ROUNDS ?? 1), backends, directions);
  results.uplink = r;
  console.log(`\n### Switch uplink vs DPDK net_vhost + net_af_packet or net_af_xdp (testpmd io) and OVS-DPDK (dpdkvhostuser + net_af_packet or AF_XDP, NORMAL) on the same veth (same generators, same run; median of ${r.rounds} round(s), ratio: median of the per-round ratios)\n`);
  console.log('| direction | frame B | back-end | Mpps through | Mpps offered |\n|---|---|---|---|---|');
  for (const row of r.rows) console.log(`| ${row.direction === 'out' ? 'guest -> uplink' : 'uplink -> guest'} | ${row.frameBytes} | ${row.backend} | ${row.mpps.toFixed(3)} | ${row.offeredMpps.toFixed(3)} |`);
  console.log('');
  for (const x of r.ratios) console.log(`${x.direction === 'out' ? 'guest -> uplink' : 'uplink -> guest'} ${x.frameBytes} B: qnh-packet / ${({ dpdk: 'DPDK', 'dpdk-afxdp': 'DPDK net_af_xdp', 'ovs-dpdk': 'OVS-DPDK net_af_packet', 'ovs-afxdp': 'OVS-DPDK afxdp' } as const)[x.versus]} = ${x.ratio.toFixed(2)} (rounds: ${x.perRound.map((v) => v.toFixed(2)).join(', ')})`);
  for (const [b, why] of Object.entries(r.ovsUnavailable)) console.log(`\n${b} not measured: ${why}`);
}

if (all || which.has('offload')) {
  const r = benchTcpOffload(Number(process.env.BENCH_SECONDS ?? 4));
  results.tcpOffload = r;
  const mtu = r.rows.find((x) => x.case === 'mtu-frames')!.gbitPerCpuSecond;
  // Rows out of the uplink are compared with 1514-byte frames out of the uplink.
  const upMtu = r.rows.find((x) => x.case === 'uplink-mtu-frames')!.gbitPerCpuSecond;
  console.log('\n### TCP through the switch, one thread: 64 KiB GSO frames vs 1514-byte frames (TCP payload per CPU second of the switch)\n');
  console.log('| frames | Gbit/s per CPU second | k frames/s | vs 1514-byte frames |\n|---|---|---|---|');
  for (const row of r.rows) console.log(`| ${row.case} | ${row.gbitPerCpuSecond.toFixed(1)} | ${(row.framesPerCpuSecond / 1e3).toFixed(1)} | ${(row.gbitPerCpuSecond / (row.case.startsWith('uplink-') ? upMtu : mtu)).toFixed(2)}x |`);
}

// One bench at a time replaces only its own sections: the file keeps the
// latest result of every bench, each with the date of its run.
mkdirSync(join(ROOT, 'bench/results'), { recursive: true });
const latest = join(ROOT, 'bench/results/latest.json');
let kept: Record<string, unknown> = {};
try { kept = JSON.parse(readFileSync(latest, 'utf8')) as Record<string, unknown>; } catch { kept = {}; }
const dates = { ...(kept.dates as Record<string, string> | undefined) };
for (const k of Object.keys(results)) if (k !== 'date' && k !== 'node') dates[k] = results.date as string;
writeFileSync(latest, JSON.stringify({ ...kept, ...results, dates }, null, 2) + '\n');
