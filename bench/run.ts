// `npm run bench`: every benchmark, each against its real alternative in the
// same run. Prints Markdown tables (pasted into README) and writes JSON to
// bench/results/latest.json. Select with arguments: helper, vhost-user.
import { mkdirSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { ROOT } from '../test/lib/paths.js';
import { benchHelperLatency } from './helper-latency.js';

const which = new Set(process.argv.slice(2));
const all = which.size === 0;
const results: Record<string, unknown> = { date: new Date().toISOString(), node: process.version };

if (all || which.has('helper')) {
  const r = await benchHelperLatency(Number(process.env.BENCH_ROUNDS ?? 40));
  results.helperLatency = r;
  console.log('\n### Helper exec-to-exit (fd received and checked with TUNGETIFF)\n');
  console.log('| program | median ms | p10 | p90 | runs |\n|---|---|---|---|---|');
  for (const row of r.rows) console.log(`| ${row.name} | ${row.medianMs} | ${row.p10Ms} | ${row.p90Ms} | ${row.runs} |`);
  console.log(`\nqemu-net-helper / node -e 0 = ${r.ratioToNode}x (goal <= 1.25x); qemu-net-helper / qemu-bridge-helper = ${r.ratioToQbh ?? 'n/a'}x`);
}

mkdirSync(join(ROOT, 'bench/results'), { recursive: true });
writeFileSync(join(ROOT, 'bench/results/latest.json'), JSON.stringify(results, null, 2) + '\n');
