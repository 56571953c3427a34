// The kernel lab from the outside: boots Debian's kernel with this machine's
// root shared read-only (test/lib/lab.ts), runs the lab's test files inside
// and reports every inner test as a test of its own here. `npm test` runs the
// fast files; QNH_LAB=full (npm run test:lab) runs every lab file.
import assert from 'node:assert/strict';
import { readdirSync } from 'node:fs';
import { join } from 'node:path';
import { it } from 'node:test';
import { guestSkipReason } from '../lib/guest.js';
import { runLab, type LabResult } from '../lib/lab.js';
import { ROOT } from '../lib/paths.js';

/** Lab files in `npm test`; the others (slow) only with QNH_LAB=full. */
const FAST = ['smoke.test.js', 'vhost-net.test.js', 'vlan-dummy.test.js'];
const all = readdirSync(join(ROOT, 'dist/test/lab')).filter((f) => f.endsWith('.test.js')).sort();
// QNH_LAB=full: every file; QNH_LAB=a.test.js,b.test.js: those (developing one).
const wanted = process.env.QNH_LAB;
const files = wanted === 'full' ? all : wanted ? wanted.split(',').filter((f) => all.includes(f)) : FAST.filter((f) => all.includes(f));

it(`kernel lab (Debian kernel, host root over 9p): ${files.join(', ')}`, { skip: guestSkipReason() ?? false, timeout: 2_700_000 }, async (t) => {
  const started = Date.now();
  const reported: Promise<void>[] = [];
  const report = (r: LabResult): void => {
    if (r.suite) return;
    const name = `${r.file ? `${r.file.replace('dist/test/lab/', '')}: ` : ''}${r.name}`;
    reported.push(t.test(name, { skip: r.skip ?? false }, () => {
      if (!r.ok) assert.fail(`in the lab (${r.ms} ms): ${r.error ?? 'failed'}`);
    }));
  };
  const diags: string[] = [];
  const onLine = (l: string): void => {
    if (process.env.QNH_LAB_CONSOLE) process.stderr.write(`lab| ${l}\n`);
    // The inner tests' diagnostics (measurements); not the runner's own summary.
    const d = /QNH-LAB-DIAG (.*)$/.exec(l);
    if (d && !/^(tests|suites|pass|fail|cancelled|skipped|todo|duration_ms) /.test(d[1]!)) diags.push(d[1]!);
  };
  // The fast files take ~3 min (idle) to ~5 min (load average 20); nested TCG far longer.
  const lab = await runLab(files, report, { onLine, timeoutMs: files.includes('nested-qemu.test.js') ? 2_400_000 : 900_000 });
  const r = await lab.done;
  await Promise.all(reported);
  const boot = r.console.split('\n').filter((l) => l.includes('QNH-LAB-BOOT')).join('\n');
  for (const d of diags) t.diagnostic(`lab: ${d}`);
  t.diagnostic(`lab: ${r.results.filter((x) => !x.suite).length} tests in ${((Date.now() - started) / 1000).toFixed(1)} s`);
  assert.ok(!r.timedOut, `the lab hit its timeout\n${r.console.slice(-3000)}`);
  assert.equal(r.exitStatus, 0, `inner node --test exit status ${r.exitStatus}\n${boot}\n${r.console.slice(-3000)}\n${r.stderr}`);
  assert.ok(r.results.some((x) => !x.suite), `no lab test reported\n${r.console.slice(-3000)}`);
});
