// Reap before refusing: QEMU quits and at once another QEMU asks for
// passthrough on the same device, while the first one's macvtap is still
// there (its watcher has not released it yet). The request releases the dead
// owner's endpoint first and succeeds; with the owner alive it is refused.
import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import { existsSync, readdirSync, readFileSync } from 'node:fs';
import { join } from 'node:path';
import { after, before, describe, it } from 'node:test';
import { NetNs } from '../lib/netns.js';
import { eventually } from '../lib/wait.js';
import { BIN } from '../lib/paths.js';
import { createParentLab, type ParentLab } from '../lib/parent-lab.js';
import { haveQemu, macvtapsHeldBy, startQemu, type QemuRun, type RunAs } from '../lib/qemu.js';
import { startTestBroker, type BrokerRun } from '../lib/broker.js';
import { runHelperLikeLibvirt, closeAll } from '../lib/helper-run.js';
import { cni, type CniCall } from '../lib/cni.js';

const skip = haveQemu() ? false : 'qemu-system-x86_64 is not installed';
const ROUNDS = 20;

/**
 * The sequence every test here is about: QEMU `q` quits and `request` runs at
 * once. With `watcher` (the old endpoint's) stopped meanwhile, the macvtap
 * surely outlives its QEMU, however fast or slow this machine is; the watcher
 * goes on afterwards, whatever happened.
 */
async function quitThenAtOnce<T>(q: QemuRun, watcher: number | null, request: () => T | Promise<T>): Promise<T> {
  if (watcher !== null) process.kill(watcher, 'SIGSTOP');
  try {
    await q.quit();
    return await request();
  } finally {
    if (watcher !== null) { try { process.kill(watcher, 'SIGCONT'); } catch { /* it exited */ } }
  }
}

/** The broker's watcher process (watch-child.js), a child of the broker. */
function brokerWatcher(brokerPid: number): number {
  for (const name of readdirSync('/proc')) {
    if (!/^\d+$/.test(name)) continue;
    try {
      const stat = readFileSync(`/proc/${name}/stat`, 'utf8');
      const ppid = Number(stat.slice(stat.lastIndexOf(')') + 2).split(' ')[1]);
      if (ppid === brokerPid && readFileSync(`/proc/${name}/cmdline`, 'utf8').includes('watch-child')) return Number(name);
    } catch { /* exited meanwhile */ }
  }
  throw new Error(`no watcher process under broker ${brokerPid}`);
}

describe('a request reaps endpoints of exited owners before refusing', { skip }, () => {
  let ns: NetNs;
  let dir: string;
  let env: NodeJS.ProcessEnv;
  let lab: ParentLab;
  before(() => {
    lab = createParentLab('qnh-reap-');
    ({ ns, dir, env } = lab);
  });
  after(() => lab.destroy());

  const macvtaps = (): string[] => ns.links().filter((l) => l.startsWith('macvtap'));
  const recordsDir = (): string => join(dir, 'state/endpoints');
  const records = (): string[] => (existsSync(recordsDir()) ? readdirSync(recordsDir()).filter((f) => f.endsWith('.json')) : []);
  const netdev = (mode: string): string[] => ['-netdev', `tap,id=n0,helper=${BIN} helper --mode=${mode} --dev=eth1`];

  /** The watcher pid of the one endpoint record (the direct helper starts one per endpoint). */
  const watcherPid = (): number | null => {
    const [f] = records();
    if (!f) return null;
    const rec = JSON.parse(readFileSync(join(recordsDir(), f), 'utf8')) as { watcher: { pid: number } | null };
    return rec.watcher?.pid ?? null;
  };
  const cleanedUp = (): Promise<void> => eventually('cleanup', () => macvtaps().length === 0 && records().length === 0, 20000);

  /** A QEMU on a `mode` macvtap quits with its watcher stopped, `request` runs at once; then everything is removed. */
  const afterQuit = async (mode: string, request: () => void): Promise<void> => {
    const q = await startQemu(ns, netdev(mode), env);
    const w = watcherPid();
    assert.ok(w, 'the helper started a watcher');
    await quitThenAtOnce(q, w, request);
    await cleanedUp();
  };

  it(`QEMU quits, passthrough on the same device at once: ${ROUNDS}/${ROUNDS} succeed`, async () => {
    // The first owner holds a bridge-mode macvtap: passthrough needs eth1 alone.
    let q: QemuRun = await startQemu(ns, netdev('veb'), env);
    const failures: string[] = [];
    let frozen = 0;
    try {
      for (let i = 0; i < ROUNDS; i++) {
        assert.equal(macvtapsHeldBy(ns, q.proc.pid!).length, 1, `round ${i}: QEMU holds its macvtap`);
        // Every other round the old endpoint's watcher is stopped first.
        const w = i % 2 === 1 ? watcherPid() : null;
        if (w !== null) frozen++;
        let next: QemuRun | null = null;
        try {
          next = await quitThenAtOnce(q, w, () => startQemu(ns, netdev('passthrough'), env));
        } catch (e) {
          failures.push(`round ${i}${w !== null ? ' (watcher stopped)' : ''}: ${(e as Error).message.split('\n')[0]}`);
        }
        if (!next) {
          // Go on from a clean device, so one failure does not hide how the other rounds fare.
          await eventually('the watcher frees eth1', () => macvtaps().length === 0, 20000);
          next = await startQemu(ns, netdev('passthrough'), env);
        }
        q = next;
      }
    } finally {
      await q.quit();
    }
    assert.equal(failures.length, 0, `${ROUNDS - failures.length}/${ROUNDS} succeeded; ${failures.slice(0, 3).join('; ')}`);
    assert.ok(frozen >= ROUNDS / 2 - 1, 'half the rounds ran with the old watcher stopped');
    await eventually('the watchers remove the last macvtap and every record', () => macvtaps().length === 0 && records().length === 0, 20000);
  });

  it('`up` meets the same: passthrough right after QEMU quit (its watcher stopped) reaps, then works; down removes it', async () => {
    await afterQuit('passthrough', () => {
      const cli = (...args: string[]) => spawnSync('ip', ['netns', 'exec', ns.name, process.execPath, BIN, ...args], { env, encoding: 'utf8' });
      const up = cli('up', '--mode=passthrough', '--dev=eth1', '--id=after-quit');
      assert.equal(up.status, 0, up.stderr);
      assert.deepEqual(records(), ['after-quit.json'], 'the dead owner\'s record is gone, the new one is there');
      assert.equal(macvtaps().length, 1);
      const down = cli('down', 'after-quit');
      assert.equal(down.status, 0, down.stderr);
    });
  });

  it('`run` meets the same: its passthrough NIC right after QEMU quit (its watcher stopped) reaps, then works', async () => {
    await afterQuit('veb', () => {
      // run appends QEMU's -netdev arguments to the child's: sh -c takes them as $0, $1...
      const r = spawnSync('ip', ['netns', 'exec', ns.name, process.execPath, BIN, 'run', '--nic', 'mode=passthrough,dev=eth1', '--', 'sh', '-c', 'ip -d -o link show type macvtap'], { env, encoding: 'utf8', timeout: 120_000 });
      assert.equal(r.status, 0, r.stderr);
      assert.match(r.stdout, /macvtap mode passthru/, 'the child saw its passthru macvtap');
      assert.equal(r.stdout.trim().split('\n').length, 1, `only that one: ${r.stdout}`);
    });
  });

  it('CNI ADD meets the same: a passthrough macvtap right after QEMU quit (its watcher stopped) reaps, then works; DEL removes it', async () => {
    const sandbox = NetNs.create('qnhrS');
    try {
      await afterQuit('veb', () => {
        const conf = { cniVersion: '1.1.0', name: 'qnhreap', type: 'qemu-net-helper', transport: 'macvtap', mode: 'passthrough', dev: 'eth1' };
        const call = (command: string): CniCall => ({ command, containerId: 'reap1', netns: `/run/netns/${sandbox.name}`, ifname: 'net1', extraEnv: { QEMU_NET_HELPER_STATE_DIR: join(dir, 'state') } });
        const add = cni(ns, call('ADD'), conf);
        assert.equal(add.status, 0, add.stdout + add.stderr);
        const d = sandbox.linkDetails('net1') as { linkinfo?: { info_kind?: string; info_data?: { mode?: string } } };
        assert.equal(d.linkinfo?.info_data?.mode, 'passthru');
        assert.equal(cni(ns, call('DEL'), conf).status, 0);
      });
    } finally {
      sandbox.destroy();
    }
  });

  it('an owner that exited after handing its fd on (libvirt-style) is not reaped while the fd lives: refused (exit 9)', async () => {
    // The owner: a process that runs the helper on a socketpair, gives the
    // macvtap fd to a `sleep` and keeps its own copy until told to exit.
    const unixFd = new URL('../../src/sys/unix-fd.js', import.meta.url).href;
    const script = `
      import { spawn } from 'node:child_process';
      const { socketPair, recvWithFds } = await import(${JSON.stringify(unixFd)});
      const [ours, theirs] = socketPair();
      const h = spawn(process.execPath, [${JSON.stringify(BIN)}, 'helper', '--mode=veb', '--dev=eth1', '--fd=3'], { stdio: ['ignore', 'inherit', 'inherit', theirs] });
      const code = await new Promise((r) => h.once('exit', r));
      const { fds } = recvWithFds(ours, new Uint8Array(16), 0, 16, 0x40);
      if (code !== 0 || fds.length !== 1) { console.log('helper failed ' + code); process.exit(1); }
      const holder = spawn('sleep', ['600'], { stdio: ['ignore', 'ignore', 'ignore', fds[0]] });
      console.log(String(holder.pid));
      process.stdin.resume();
      process.stdin.once('end', () => process.exit(0));`;
    const owner = ns.spawn(process.execPath, ['--input-type=module', '-e', script], { env, stdio: ['pipe', 'pipe', 'inherit'] });
    const ownerExit = new Promise((r) => owner.once('exit', r));
    let out = '';
    owner.stdout!.setEncoding('utf8').on('data', (d: string) => { out += d; });
    await eventually('the owner got its macvtap and handed it to sleep', () => /^\d+\n/.test(out) || /failed/.test(out), 60000);
    const holder = Number(out.trim());
    assert.ok(holder > 0, out);
    let w: number | null = null;
    try {
      const [held] = macvtapsHeldBy(ns, holder);
      assert.ok(held, 'sleep holds the macvtap');
      w = watcherPid();
      assert.ok(w, 'the helper started a watcher');
      process.kill(w, 'SIGSTOP');
      owner.stdin!.end();
      await ownerExit;
      const r = await runHelperLikeLibvirt(ns, ['helper', '--mode=passthrough', '--dev=eth1', '--fd={FD}'], env);
      closeAll(r.fds);
      assert.equal(r.code, 9, r.stderr);
      assert.match(r.stderr, /parent device 'eth1' already carries macvtap/);
      assert.deepEqual(macvtapsHeldBy(ns, holder), [held], 'the process the fd was handed to keeps its macvtap');
      assert.equal(records().length, 1, 'its record stays');
    } finally {
      if (w !== null) { try { process.kill(w, 'SIGCONT'); } catch { /* it exited */ } }
      owner.kill('SIGKILL');
      try { process.kill(holder, 'SIGKILL'); } catch { /* gone */ }
    }
    await eventually('the watcher adopts sleep, then releases after it is killed', () => macvtaps().length === 0 && records().length === 0, 30000);
  });

  it('with the old owner alive the request is still refused (exit 9), and the owner keeps its macvtap', async () => {
    const q = await startQemu(ns, netdev('passthrough'), env);
    try {
      const [held] = macvtapsHeldBy(ns, q.proc.pid!);
      assert.ok(held, 'QEMU holds a passthru macvtap');
      const r = await runHelperLikeLibvirt(ns, ['helper', '--mode=passthrough', '--dev=eth1', '--fd={FD}'], env);
      closeAll(r.fds);
      assert.equal(r.code, 9, r.stderr);
      assert.match(r.stderr, /parent device 'eth1' is taken by passthru macvtap/);
      assert.deepEqual(macvtapsHeldBy(ns, q.proc.pid!), [held], 'the live owner keeps its macvtap');
      assert.equal(records().length, 1, 'its record stays');
    } finally {
      await q.quit();
    }
    await cleanedUp();
  });
});

describe('through the broker: an unprivileged QEMU quits, passthrough at once on the same device', { skip }, () => {
  const NOBODY: RunAs = { uid: 65534, gid: 65534 };
  const BROKER_ROUNDS = 5;
  let ns: NetNs;
  let broker: BrokerRun;
  before(async () => {
    ns = NetNs.create('qnh-rb');
    ns.addVeth('veth0', 'veth1');
    broker = await startTestBroker(ns, { acl: 'allow profile:pt\nallow profile:shared\nallow mode:veb\nallow mode:passthrough\nallow dev:veth0\n', profiles: { pt: { mode: 'passthrough', dev: 'veth0' }, shared: { mode: 'veb', dev: 'veth0' } } });
  });
  after(async () => {
    await broker?.stop();
    ns?.destroy();
  });
  const macvtaps = (): string[] => ns.links().filter((l) => l.startsWith('macvtap'));
  const records = (): string[] => {
    const d = join(broker.stateDir, 'endpoints');
    return existsSync(d) ? readdirSync(d).filter((f) => f.endsWith('.json')) : [];
  };
  const netdev = (profile: string): string[] => ['-netdev', `bridge,id=n0,br=${profile},helper=${BIN}`];

  it(`${BROKER_ROUNDS}/${BROKER_ROUNDS} start, each with the broker's watcher stopped while the old QEMU quits`, async () => {
    let q = await startQemu(ns, netdev('shared'), broker.clientEnv(), NOBODY);
    const failures: string[] = [];
    try {
      for (let i = 0; i < BROKER_ROUNDS; i++) {
        assert.equal(macvtapsHeldBy(ns, q.proc.pid!).length, 1, `round ${i}: QEMU holds its macvtap`);
        let next: QemuRun | null = null;
        try {
          next = await quitThenAtOnce(q, brokerWatcher(broker.pid), () => startQemu(ns, netdev('pt'), broker.clientEnv(), NOBODY));
        } catch (e) {
          failures.push(`round ${i}: ${(e as Error).message.split('\n')[0]}`);
        }
        if (!next) {
          await eventually('the broker frees veth0', () => macvtaps().length === 0, 20000);
          next = await startQemu(ns, netdev('pt'), broker.clientEnv(), NOBODY);
        }
        q = next;
      }
    } finally {
      await q.quit();
    }
    assert.equal(failures.length, 0, `${BROKER_ROUNDS - failures.length}/${BROKER_ROUNDS} succeeded; ${failures.slice(0, 3).join('; ')}`);
    await eventually('the broker removes the last macvtap and every record', () => macvtaps().length === 0 && records().length === 0, 20000);
  });
});

describe('the broker\'s endpoint bound counts no endpoint whose owner exited', { skip }, () => {
  const NOBODY: RunAs = { uid: 65534, gid: 65534 };
  let ns: NetNs;
  let broker: BrokerRun;
  before(async () => {
    ns = NetNs.create('qnh-rl');
    ns.addVeth('veth0', 'veth1');
    broker = await startTestBroker(ns, { acl: 'allow profile:shared\nallow mode:veb\nallow dev:veth0\n', profiles: { shared: { mode: 'veb', dev: 'veth0' } }, args: ['--max-endpoints-per-user', '1'] });
  });
  after(async () => {
    await broker?.stop();
    ns?.destroy();
  });
  const macvtaps = (): string[] => ns.links().filter((l) => l.startsWith('macvtap'));
  const netdev = ['-netdev', `bridge,id=n0,br=shared,helper=${BIN}`];

  it('at --max-endpoints-per-user 1: a second live QEMU is refused (exit 9); right after the first quits (watcher stopped) one is served', async () => {
    const a = await startQemu(ns, netdev, broker.clientEnv(), NOBODY);
    const w = brokerWatcher(broker.pid);
    try {
      await assert.rejects(startQemu(ns, netdev, broker.clientEnv(), NOBODY), /no more endpoints: uid 65534 has 1 endpoints/);
      assert.ok(broker.decisions().some((l) => /refused \(exit 9\)/.test(l)), broker.decisions().join('\n'));
      const b = await quitThenAtOnce(a, w, () => startQemu(ns, netdev, broker.clientEnv(), NOBODY));
      assert.equal(macvtapsHeldBy(ns, b.proc.pid!).length, 1);
      await b.quit();
    } finally {
      await a.quit();
    }
    await eventually('the broker removes every macvtap', () => macvtaps().length === 0, 20000);
  });
});
