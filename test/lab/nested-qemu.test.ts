// Kernel lab, slow file (npm run test:lab): a QEMU inside the lab boots the
// tiny test guest through `run` with 2 queues and vhost-net (vhost=on, one
// /dev/vhost-net fd per queue), and the guest pings the bridge. Nested TCG
// is slow: minutes, not seconds.
import assert from 'node:assert/strict';
import { randomBytes } from 'node:crypto';
import { existsSync, mkdtempSync, readFileSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { it } from 'node:test';
import { runWithNics } from '../../src/launch/launcher.js';
import { ensureGuestImage, qemuArgs, qemuBinary } from '../lib/guest.js';
import { ip } from '../lib/vhost-net-guest.js';

it('a nested TCG guest on a 2-queue tap with vhost-net (via run) pings the bridge and sees 2 combined channels', { timeout: 1_200_000 }, async (t) => {
  const br = `qnb${randomBytes(2).toString('hex')}`;
  const dir = mkdtempSync(join(tmpdir(), 'qnh-nested-'));
  ip('link', 'add', br, 'type', 'bridge');
  ip('addr', 'add', '10.94.0.1/24', 'dev', br);
  ip('link', 'set', br, 'up');
  try {
    const image = await ensureGuestImage();
    const args = qemuArgs(image, { smp: 2, settings: { mode: 'ping', ip: '10.94.0.2/24', peer: '10.94.0.1', count: 3, queues: 1, deadline: 60, carrier: 60 } });
    // The console goes to a file: `run` gives QEMU our stdio, which is the test runner's.
    const console = join(dir, 'console.txt');
    const i = args.indexOf('stdio');
    args[i] = `file:${console}`;
    const log: string[] = [];
    const started = Date.now();
    // Progress for QNH_LAB_CONSOLE=1: the nested console's new lines, every 10 s.
    let shown = 0;
    const progress = setInterval(() => {
      if (!existsSync(console)) return;
      const text = readFileSync(console, 'utf8');
      for (const l of text.slice(shown).split('\n').filter(Boolean)) process.stderr.write(`nested ${((Date.now() - started) / 1000).toFixed(0)}s| ${l}\n`);
      shown = text.length;
    }, 10_000);
    const code = await runWithNics({ nics: [`mode=bridge,br=${br},queues=2,vhost=on,mac=52:54:00:94:00:02`], command: [qemuBinary()!, ...args], log: (l) => log.push(l) });
    clearInterval(progress);
    const out = existsSync(console) ? readFileSync(console, 'utf8') : '';
    t.diagnostic(`nested guest: QEMU exit ${code} after ${((Date.now() - started) / 1000).toFixed(0)} s; ${log.join('; ')}`);
    assert.match(log.join('\n'), /bridge\/vhost-kernel tap\d+, 2 queue\(s\) with vhost-net/);
    assert.match(out, /QNH-PING-OK 10\.94\.0\.1/, out.slice(-3000));
    assert.match(out, /QNH-QUEUES rx=2 tx=2/);
    assert.equal((out.match(/QNH-ETHTOOL Combined:\s+2/g) ?? []).length, 2, out.slice(-3000));
    assert.equal(code, 0);
  } finally {
    ip('link', 'del', br);
    rmSync(dir, { recursive: true, force: true });
  }
});
