// `qemu-net-helper run`: NICs from the policies handed to QEMU by fd
// inheritance. A 2-queue TCG guest on a multiqueue tap pings the bridge and
// reports 2 combined channels (ethtool -l); cheaper cases use a shell as the
// "QEMU" to check fds, exit codes, signals, dry runs and clean-up.
import assert from 'node:assert/strict';
import { spawn, spawnSync } from 'node:child_process';
import { existsSync, mkdtempSync, readdirSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, before, describe, it } from 'node:test';
import { ensureGuestImage, Guest, guestSkipReason, qemuArgs, qemuBinary } from '../lib/guest.js';
import { NetNs } from '../lib/netns.js';
import { BIN } from '../lib/paths.js';
import { eventually } from '../lib/wait.js';

describe('run: QEMU as our child with policy-made NICs', () => {
  let ns: NetNs;
  let dir: string;
  let env: NodeJS.ProcessEnv;
  before(() => {
    ns = NetNs.create('qnh-run');
    ns.addBridge('br0', '10.0.0.1/24');
    ns.ip('link', 'add', 'up0', 'type', 'veth', 'peer', 'name', 'up0p');
    ns.ip('link', 'set', 'up0', 'up');
    ns.ip('link', 'set', 'up0p', 'up');
    dir = mkdtempSync(join(tmpdir(), 'qnh-run-'));
    env = { ...process.env, QEMU_NET_HELPER_STATE_DIR: join(dir, 'state'), QEMU_NET_HELPER_CONFIG: join(dir, 'config') };
  });
  after(() => {
    ns?.destroy();
    if (dir) rmSync(dir, { recursive: true, force: true });
  });
  const run = (args: string[]): { status: number | null; stdout: string; stderr: string } => {
    const r = spawnSync('ip', ['netns', 'exec', ns.name, process.execPath, BIN, 'run', ...args], { encoding: 'utf8', env, timeout: 120_000 });
    return { status: r.status, stdout: r.stdout, stderr: r.stderr };
  };
  const records = (): string[] => (existsSync(join(dir, 'state/endpoints')) ? readdirSync(join(dir, 'state/endpoints')) : []);
  const clean = (): void => {
    assert.deepEqual(ns.links().sort(), ['br0', 'lo', 'up0', 'up0p']);
    assert.deepEqual(records(), []);
  };

  it('a 2-queue tap: fds 3 and 4 are queues of one multiqueue tap; the exit status is the child\'s', () => {
    const r = run(['--nic', 'mode=bridge,br=br0,queues=2', '--', 'sh', '-c',
      'grep -h iff /proc/self/fdinfo/3 /proc/self/fdinfo/4; ip -d -o link show tap0; exit 7']);
    assert.equal(r.status, 7, r.stderr);
    assert.deepEqual(r.stdout.match(/^iff:\s*(\S+)/gm)?.map((l) => l.split(/\s+/)[1]), ['tap0', 'tap0']);
    assert.match(r.stdout, /multi_queue numqueues 2/);
    assert.match(r.stdout, /master br0/);
    assert.match(r.stderr, /n0: bridge\/tap tap0, 2 queue\(s\)/);
    clean();
  });

  it('macvtap (vepa, 2 queues): /dev/tapN opened twice, the link removed when the child exits', () => {
    const r = run(['--nic', 'mode=vepa,dev=up0,queues=2,mac=52:54:00:00:0a:02', '--', 'sh', '-c', 'readlink /proc/self/fd/3 /proc/self/fd/4; ip -o link show type macvtap']);
    assert.equal(r.status, 0, r.stderr);
    const devs = r.stdout.split('\n').filter((l) => l.startsWith('/dev/'));
    assert.equal(devs.length, 2, r.stdout);
    assert.equal(devs[0], devs[1]);
    assert.match(devs[0]!, /^\/dev\/tap\d+$/);
    assert.match(r.stdout, /52:54:00:00:0a:02/);
    clean();
  });

  it('--dry-run prints the QEMU command (fds=, mq=on, vectors=2N+2) and leaves nothing', () => {
    const r = run(['--dry-run', '--nic', 'mode=bridge,br=br0,queues=2,mac=52:54:00:00:0a:03', '--nic', 'br=br0,id=lan', '--', 'qemu-system-x86_64', '-m', '256']);
    assert.equal(r.status, 0, r.stderr);
    assert.equal(r.stdout.trim(), 'qemu-system-x86_64 -m 256 -netdev tap,id=n0,fds=3:4,vhost=off -device virtio-net-pci,netdev=n0,mq=on,vectors=6,mac=52:54:00:00:0a:03 -netdev tap,id=lan,fd=5,vhost=off -device virtio-net-pci,netdev=lan');
    clean();
  });

  it('the old spelling vfpool= still works, with one deprecation line on stderr', () => {
    const r = run(['--dry-run', '--nic', 'mode=bridge,br=br0,vfpool=pf9', '--', 'qemu-system-x86_64', '-m', '256']);
    assert.equal(r.status, 0, r.stderr);
    assert.equal(r.stderr.split('\n').filter((l) => /deprecated/.test(l)).length, 1);
    assert.match(r.stderr, /^qemu-net-helper: warning: --nic key 'vfpool' is deprecated, write 'vf-pool'/m);
    const now = run(['--dry-run', '--nic', 'mode=bridge,br=br0,vf-pool=pf9', '--', 'qemu-system-x86_64', '-m', '256']);
    assert.equal(now.status, 0, now.stderr);
    assert.doesNotMatch(now.stderr, /deprecated/);
    clean();
  });

  it('signals are forwarded: SIGTERM to run ends the child, run exits 128+15, nothing left', async () => {
    const p = spawn('ip', ['netns', 'exec', ns.name, process.execPath, BIN, 'run', '--nic', 'mode=vepa,dev=up0', '--', 'sh', '-c', 'exec sleep 617'], { env, stdio: ['ignore', 'pipe', 'pipe'] });
    let err = '';
    p.stderr.setEncoding('utf8').on('data', (d: string) => { err += d; });
    const exited = new Promise<number | null>((res) => p.once('exit', (code) => res(code)));
    await eventually('the macvtap and its record exist', () => records().length === 1 && ns.links().some((l) => l.startsWith('macvtap') || l.startsWith('qnhmv')), 30_000);
    await eventually('sleep runs', () => spawnSync('pgrep', ['-f', '^sleep 617$']).status === 0, 30_000);
    p.kill('SIGTERM');
    assert.equal(await exited, 128 + 15, err);
    clean();
  });

  it('bad input: a clear line, exit code, nothing left', () => {
    const bad = run(['--nic', 'mode=bridge,br=br0,colour=red', '--', 'true']);
    assert.equal(bad.status, 2);
    assert.match(bad.stderr, /unknown key 'colour'/);
    const noVhost = run(['--nic', 'mode=bridge,br=br0,vhost=on', '--', 'true']);
    assert.equal(noVhost.status, 7);
    assert.match(noVhost.stderr, /vhost-net/);
    const noBin = run(['--nic', 'mode=vepa,dev=up0', '--', '/nonexistent/qemu']);
    assert.equal(noBin.status, 5, noBin.stderr);
    assert.match(noBin.stderr, /cannot run '\/nonexistent\/qemu'/);
    const noCmd = run(['--nic', 'br=br0']);
    assert.equal(noCmd.status, 2);
    clean();
  });

  it('a later NIC that fails undoes the earlier ones (a journaled macvtap included); a missing profile= is named with its --nic', () => {
    const r = run(['--nic', 'mode=vepa,dev=up0,mac=52:54:00:00:0a:05', '--nic', 'mode=vepa,dev=qnhnodev0', '--', 'true']);
    assert.equal(r.status, 5, r.stderr);
    assert.match(r.stderr, /device 'qnhnodev0' does not exist/);
    clean();
    const p = run(['--nic', 'mode=vepa,dev=up0', '--nic', 'profile=qnhnone', '--', 'true']);
    assert.equal(p.status, 8, p.stderr);
    assert.match(p.stderr, /--nic 'profile=qnhnone': no profile 'qnhnone' in .*\/profiles/);
    clean();
  });

  const skip = guestSkipReason() ?? false;
  it('a 2-queue guest (2 vCPUs) pings the bridge; ethtool -l shows 2 combined; the tap has 2 queues', { skip }, async (t) => {
    const image = await ensureGuestImage();
    const qemu = qemuBinary()!;
    const opts = { smp: 2, settings: { mode: 'serve' as const, ip: '10.0.0.2/24', peer: '10.0.0.1', count: 3, queues: 1, wait: 120 } };
    // detached: run leads its own process group, so a failed test can kill run and QEMU together.
    const proc = spawn('ip', ['netns', 'exec', ns.name, process.execPath, BIN, 'run', '--nic', 'mode=bridge,br=br0,queues=2,mac=52:54:00:00:0a:01', '--', qemu, ...qemuArgs(image, opts)],
      { env, stdio: ['ignore', 'pipe', 'pipe'], detached: true });
    const g = new Guest(proc, { ...opts, timeoutMs: 240_000, name: 'run-guest' });
    try {
      const ping = await g.waitFor('PING-OK', 180_000).catch(() => undefined);
      assert.ok(ping, `no QNH-PING-OK: ${g.markers.map((m) => `${m.name} ${m.text}`).join('\n')}\n${g.output().slice(-2000)}\n${g.stderr()}`);
      assert.match(g.marker('QUEUES')?.text ?? '', /rx=2 tx=2/);
      const ethtool = g.markers.filter((m) => m.name === 'QNH-ETHTOOL').map((m) => m.text);
      t.diagnostic(`ethtool -l eth0 in the guest: ${ethtool.join(' | ')}`);
      // "Pre-set maximums: ... Combined: 2" and "Current hardware settings: ... Combined: 2"
      assert.equal(ethtool.filter((l) => /^Combined:\s+2$/.test(l)).length, 2, ethtool.join('\n'));
      assert.match(ns.ip('-d', '-o', 'link', 'show', 'tap0'), /multi_queue numqueues 2/);
      const fromHost = ns.exec('busybox', 'ping', '-c', '3', '-i', '0.2', '-w', '10', '10.0.0.2');
      assert.match(fromHost, /3 packets received/);
      t.diagnostic(`spawn->PING-OK ${ping.atMs} ms`);
    } finally {
      // SIGTERM to run is forwarded to QEMU, which quits; run then exits.
      try { process.kill(proc.pid!, 'SIGTERM'); } catch { /* gone */ }
      const r = await g.result();
      try { process.kill(-proc.pid!, 'SIGKILL'); } catch { /* group gone */ }
      t.diagnostic(`run exited ${r.exitCode}`);
    }
    await eventually('the tap went with QEMU', () => !ns.links().includes('tap0'), 30_000);
    clean();
  });
});
