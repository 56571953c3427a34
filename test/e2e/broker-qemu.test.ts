// An unprivileged user's real QEMU 7.2 gets its NICs from our broker: the
// helper QEMU runs has no CAP_NET_ADMIN, so it hands QEMU's socket to a root
// broker (started in the test namespace) that checks the ACL and sends the fd.
import assert from 'node:assert/strict';
import { existsSync, readdirSync, readFileSync } from 'node:fs';
import { join } from 'node:path';
import { after, before, describe, it } from 'node:test';
import { startTestBroker, type BrokerRun } from '../lib/broker.js';
import { runHelperLikeLibvirt } from '../lib/helper-run.js';
import { NetNs } from '../lib/netns.js';
import { BIN } from '../lib/paths.js';
import { haveQemu, macvtapsHeldBy, setprivArgs, startQemu, tapsHeldBy, type QemuRun, type RunAs } from '../lib/qemu.js';
import { eventually } from '../lib/wait.js';

const skip = haveQemu() ? false : 'qemu-system-x86_64 is not installed';
// nobody: no capabilities, no groups; nothing of it is ours to clean up.
const NOBODY: RunAs = { uid: 65534, gid: 65534 };
const MAC = '52:54:00:7b:01:02';
const MAC2 = '52:54:00:7b:01:03';
// A supplementary group no account has: only a QEMU given it may use brgrp.
const GROUP = 64123;

const ACL = [
  '# broker test ACL',
  'allow br0',
  'allow brx',
  'deny brdeny',
  'allow profile:lan',
  'allow mode:vepa',
  'allow dev:veth0',
  `allow brgrp group=${GROUP}`,
  'allow profile:lan2',
  '',
].join('\n');

describe('unprivileged QEMU through the broker', { skip }, () => {
  let ns: NetNs;
  let broker: BrokerRun;
  const started = Date.now();
  let requests = 0;
  let allowed = 0;

  before(async () => {
    ns = NetNs.create('qnh-bq');
    ns.addBridge('br0', '10.98.0.1/24', 1400);
    ns.addBridge('brx');
    ns.addBridge('brdeny');
    ns.addBridge('brgrp');
    ns.addVeth('veth0', 'veth1');
    broker = await startTestBroker(ns, {
      acl: ACL,
      profiles: { lan: { mode: 'vepa', dev: 'veth0', mac: MAC }, lan2: { mode: 'vepa', dev: 'veth0', mac: MAC2 } },
    });
  });
  after(async () => {
    await broker?.stop();
    ns?.destroy();
    process.stderr.write(`# broker-qemu: ${Date.now() - started} ms in all\n`);
  });

  const env = (): NodeJS.ProcessEnv => broker.clientEnv();
  const macvtaps = (): string[] => ns.links().filter((l) => l.startsWith('macvtap'));
  const records = (): string[] => {
    const d = join(broker.stateDir, 'endpoints');
    return existsSync(d) ? readdirSync(d).filter((f) => f.endsWith('.json')) : [];
  };

  function assertTapOnBridge(q: QemuRun, bridge: string, mtu: number): string {
    const taps = tapsHeldBy(q.proc.pid!);
    assert.equal(taps.length, 1, `QEMU should hold exactly one tap (fdinfo iff:), holds ${JSON.stringify(taps)}`);
    const d = ns.linkDetails(taps[0]!) as { master?: string; mtu: number; linkinfo: { info_kind: string; info_data: { type: string; vnet_hdr: boolean } } };
    assert.equal(d.master, bridge);
    assert.equal(d.mtu, mtu);
    assert.equal(d.linkinfo.info_kind, 'tun');
    assert.equal(d.linkinfo.info_data.type, 'tap');
    assert.equal(d.linkinfo.info_data.vnet_hdr, true);
    return taps[0]!;
  }

  it('QEMU runs as uid 65534 without capabilities', async () => {
    const q = await startQemu(ns, [], env(), NOBODY);
    try {
      const status = readFileSync(`/proc/${q.proc.pid}/status`, 'utf8');
      assert.match(status, /^Uid:\s+65534\s+65534\s+65534\s+65534$/m);
      assert.match(status, /^CapEff:\s+0+$/m);
    } finally {
      await q.quit();
    }
  });

  it('exec form: -netdev tap,helper=PATH puts a tap on br0; the tap dies with QEMU', async () => {
    const t0 = Date.now();
    const q = await startQemu(ns, ['-netdev', `tap,id=n0,helper=${BIN}`], env(), NOBODY);
    requests++; allowed++;
    const tap = assertTapOnBridge(q, 'br0', 1400);
    await q.quit();
    assert.ok(!ns.links().includes(tap), `${tap} should die with QEMU`);
    process.stderr.write(`# exec form: ${Date.now() - t0} ms\n`);
  });

  it('sh -c form: -netdev bridge,br=brx,helper="PATH helper" puts a tap on brx', async () => {
    const t0 = Date.now();
    const q = await startQemu(ns, ['-netdev', `bridge,id=n0,br=brx,helper=${BIN} helper`], env(), NOBODY);
    requests++; allowed++;
    const tap = assertTapOnBridge(q, 'brx', 1500);
    await q.quit();
    assert.ok(!ns.links().includes(tap));
    process.stderr.write(`# sh -c form: ${Date.now() - t0} ms\n`);
  });

  it('QMP netdev_add hotplug: the helper QEMU runs then also goes through the broker', async () => {
    const q = await startQemu(ns, [], env(), NOBODY);
    try {
      assert.deepEqual(tapsHeldBy(q.proc.pid!), []);
      const r = await q.qmp.cmd('netdev_add', { type: 'tap', id: 'h1', helper: BIN });
      requests++; allowed++;
      assert.ok('return' in r, JSON.stringify(r));
      assertTapOnBridge(q, 'br0', 1400);
    } finally {
      await q.quit();
    }
  });

  it('a profile named like the bridge gives a macvtap in VEPA mode on veth0; the broker removes it after QEMU quits', async () => {
    const t0 = Date.now();
    const q = await startQemu(ns, ['-netdev', `bridge,id=n0,br=lan,helper=${BIN}`], env(), NOBODY);
    requests++; allowed++;
    let quit = false;
    try {
      const held = macvtapsHeldBy(ns, q.proc.pid!);
      assert.equal(held.length, 1, `QEMU should hold one macvtap, holds ${JSON.stringify(held)}`);
      const d = ns.linkDetails(held[0]!) as { address: string; link?: string; linkinfo: { info_kind: string; info_data: { mode: string } } };
      assert.equal(d.linkinfo.info_kind, 'macvtap');
      assert.equal(d.linkinfo.info_data.mode, 'vepa');
      assert.equal(d.link, 'veth0');
      assert.equal(d.address, MAC, 'the profile\'s MAC');
      assert.equal(records().length, 1, 'the broker recorded the endpoint');
      await q.quit();
      quit = true;
      // No watcher process of ours: the broker itself follows QEMU and releases it.
      await eventually('the broker removes the macvtap and its record after QEMU quit', () => macvtaps().length === 0 && records().length === 0, 20_000);
      assert.ok(ns.links().includes('veth0'), 'the uplink stays');
    } finally {
      if (!quit) await q.quit();
    }
    process.stderr.write(`# macvtap profile: ${Date.now() - t0} ms (incl. release)\n`);
  });

  it('broker SIGKILLed and restarted: it re-attaches to a live QEMU, and releases the macvtap of one that quit meanwhile', async () => {
    const t0 = Date.now();
    const a = await startQemu(ns, ['-netdev', `bridge,id=n0,br=lan,helper=${BIN}`], env(), NOBODY);
    requests++; allowed++;
    let b: QemuRun | undefined;
    try {
      const [tapA] = macvtapsHeldBy(ns, a.proc.pid!);
      assert.ok(tapA, 'A holds a macvtap');
      b = await startQemu(ns, ['-netdev', `bridge,id=n0,br=lan2,helper=${BIN}`], env(), NOBODY);
      requests++; allowed++;
      const [tapB] = macvtapsHeldBy(ns, b.proc.pid!);
      assert.ok(tapB, 'B holds a macvtap');
      assert.equal(records().length, 2);

      await broker.crash();
      await b.quit();
      b = undefined;
      // Nobody else cleans up after B: the macvtap outlives its QEMU while no broker runs.
      await new Promise((r) => setTimeout(r, 500));
      assert.ok(ns.links().includes(tapB), 'without a broker the macvtap of a dead QEMU stays');

      const from = broker.lines().length;
      await broker.restart();
      await eventually('the restarted broker releases the dead QEMU\'s macvtap', () => !ns.links().includes(tapB) && records().length === 1, 20_000);
      await broker.waitForLine(/^broker: released endpoint \S+ \(its owner is gone\)$/, 5000, from);
      assert.ok(ns.links().includes(tapA), 'A\'s macvtap stays while A runs');

      await a.quit();
      await eventually('the restarted broker releases A\'s macvtap after A quits', () => macvtaps().length === 0 && records().length === 0, 20_000);
    } finally {
      await b?.quit();
      await a.quit();
    }
    process.stderr.write(`# broker crash and restart: ${Date.now() - t0} ms\n`);
  });

  it('a denied bridge fails QEMU with our message naming bridge, file and rule', async () => {
    await assert.rejects(
      startQemu(ns, ['-netdev', `bridge,id=n0,br=brdeny,helper=${BIN}`], env(), NOBODY),
      (e: Error) => {
        const rule = `access denied: bridge 'brdeny' is refused by rule 'deny brdeny' at ${broker.aclFile}:4`;
        assert.ok(e.message.includes(rule), `QEMU's stderr should carry: ${rule}\ngot: ${e.message}`);
        assert.match(e.message, /qemu-system-x86_64: -netdev bridge,id=n0,br=brdeny,.*: bridge helper failed/);
        return true;
      },
    );
    requests++;
    assert.ok(!ns.links().some((l) => l.startsWith('tap')), 'no tap left behind');
  });

  it('a bridge no rule allows is refused too (default deny)', async () => {
    ns.addBridge('brnone');
    await assert.rejects(startQemu(ns, ['-netdev', `bridge,id=n0,br=brnone,helper=${BIN}`], env(), NOBODY), /access denied: bridge 'brnone' is not allowed by /);
    requests++;
  });

  it('a group rule: allowed with the supplementary group (SO_PEERGROUPS), refused without it', async () => {
    const q = await startQemu(ns, ['-netdev', `bridge,id=n0,br=brgrp,helper=${BIN}`], env(), { ...NOBODY, groups: [GROUP] });
    requests++; allowed++;
    try {
      assert.match(readFileSync(`/proc/${q.proc.pid}/status`, 'utf8'), new RegExp(`^Groups:\\s+${GROUP}\\s*$`, 'm'));
      assertTapOnBridge(q, 'brgrp', 1500);
    } finally {
      await q.quit();
    }
    await assert.rejects(startQemu(ns, ['-netdev', `bridge,id=n0,br=brgrp,helper=${BIN}`], env(), NOBODY), /access denied: bridge 'brgrp' is not allowed by /);
    requests++;
  });

  it('no broker: the helper exits 4 with a line saying how to start one; QEMU shows it', async () => {
    const missing = join(broker.dir, 'nobroker.sock');
    const noEnv = { ...process.env, QEMU_NET_HELPER_BROKER: missing };
    const r = await runHelperLikeLibvirt(ns, ['--use-vnet', '--br=br0', '--fd={FD}'], noEnv, setprivArgs(NOBODY));
    assert.equal(r.code, 4, r.stderr);
    assert.equal(r.fds.length, 0);
    assert.equal(r.stderr.trim().split('\n').length, 1, `one line: ${r.stderr}`);
    assert.match(r.stderr, new RegExp(`no qemu-net-helper broker answers at ${missing.replace(/[.]/g, '\\.')}`));
    assert.match(r.stderr, /qemu-net-helper daemon/);
    await assert.rejects(startQemu(ns, ['-netdev', `tap,id=n0,helper=${BIN}`], noEnv, NOBODY), /no qemu-net-helper broker answers at .*qemu-net-helper daemon/);
  });

  it('the broker logged one line per decision: uid, pid and verdict', async () => {
    await eventually('every decision logged', () => broker.decisions().length >= requests, 10_000);
    const d = broker.decisions();
    assert.equal(d.length, requests, `one line per request:\n${broker.lines().join('\n')}`);
    for (const l of d) assert.match(l, /^broker: uid=65534 pid=[1-9]\d* comm=\S+: helper .*--br=\S+.*: (allowed: |refused \(exit \d+\): )/);
    assert.equal(d.filter((l) => /: allowed: /.test(l)).length, allowed);
    assert.ok(d.some((l) => /--br=brdeny.*refused \(exit 3\): access denied: bridge 'brdeny'/.test(l)), d.join('\n'));
    assert.ok(d.some((l) => /--br=lan.*allowed: vepa macvtap\/macvtap/.test(l)), d.join('\n'));
  });
});
