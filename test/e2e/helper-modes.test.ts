// Every mode through the real helper path: QEMU runs `qemu-net-helper helper
// --mode=...`, holds the right fd, and the pieces that outlive QEMU's fd are
// removed by the watcher after QEMU quits.
import assert from 'node:assert/strict';
import { existsSync, mkdirSync, mkdtempSync, readdirSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, before, describe, it } from 'node:test';
import { NetNs } from '../lib/netns.js';
import { eventually } from '../lib/wait.js';
import { BIN } from '../lib/paths.js';
import { createParentLab, type ParentLab } from '../lib/parent-lab.js';
import { haveQemu, macvtapsHeldBy, startQemu } from '../lib/qemu.js';
import { createFakeSriov, type FakeSriov } from '../lib/fake-sysfs.js';

const skip = haveQemu() ? false : 'qemu-system-x86_64 is not installed';

describe('QEMU runs the helper in each mode', { skip }, () => {
  let ns: NetNs;
  let wire: NetNs;
  let dir: string;
  let env: NodeJS.ProcessEnv;
  let lab: ParentLab;
  before(() => {
    lab = createParentLab('qnh-modes-');
    ({ ns, wire, dir, env } = lab);
  });
  after(() => lab.destroy());

  const macvtaps = (): string[] => ns.links().filter((l) => l.startsWith('macvtap'));
  const records = (): string[] => (existsSync(join(dir, 'state/endpoints')) ? readdirSync(join(dir, 'state/endpoints')) : []);

  for (const [mode, kernelMode] of [['vepa', 'vepa'], ['veb', 'bridge'], ['private', 'private'], ['passthrough', 'passthru']] as const) {
    it(`--mode=${mode} on an ethernet device: QEMU holds a macvtap in mode ${kernelMode}; gone after QEMU quits`, async () => {
      const q = await startQemu(ns, ['-netdev', `tap,id=n0,helper=${BIN} helper --mode=${mode} --dev=eth1 --mac=52:54:00:00:01:01`], env);
      try {
        const held = macvtapsHeldBy(ns, q.proc.pid!);
        assert.equal(held.length, 1, `QEMU holds ${JSON.stringify(held)}`);
        const d = ns.linkDetails(held[0]!) as { link: string; address: string; linkinfo: { info_kind: string; info_data: { mode: string } } };
        assert.equal(d.linkinfo.info_kind, 'macvtap');
        assert.equal(d.linkinfo.info_data.mode, kernelMode);
        assert.equal(d.link, 'eth1');
        assert.equal(d.address, '52:54:00:00:01:01');
        assert.equal(records().length, 1, 'the endpoint is recorded with its owner');
      } finally {
        await q.quit();
      }
      await eventually('the watcher removes the macvtap and the record', () => macvtaps().length === 0 && records().length === 0);
    });
  }

  it('macvtap: frames written by QEMU\'s guest reach the peer of --dev (TCG guest pings the wire)', async (t) => {
    const { bootGuest, guestSkipReason } = await import('../lib/guest.js');
    if (guestSkipReason()) return t.skip(guestSkipReason()!);
    wire.ip('addr', 'add', '10.7.0.1/24', 'dev', 'weth1');
    try {
      const r = await bootGuest({
        ns,
        env,
        args: ['-netdev', `tap,id=n0,helper=${BIN} helper --mode=vepa --dev=eth1 --mac=52:54:00:00:01:02 --acl=${join(dir, 'acl.conf')}`, '-device', 'virtio-net-pci,netdev=n0,mac=52:54:00:00:01:02'],
        settings: { mode: 'ping', ip: '10.7.0.2/24', peer: '10.7.0.1', count: 3 },
      });
      const ok = r.markers.find((m) => m.name === 'QNH-PING-OK');
      assert.ok(ok, `no QNH-PING-OK: ${r.markers.map((m) => m.name).join(' ')}\n${r.output.slice(-2000)}\n${r.stderr}`);
    } finally {
      wire.ip('addr', 'flush', 'dev', 'weth1');
    }
    await eventually('the watcher removes the macvtap', () => macvtaps().length === 0);
  });

  it('a second passthru on the same device is refused; QEMU reports our message', async () => {
    const q = await startQemu(ns, ['-netdev', `tap,id=n0,helper=${BIN} helper --mode=passthrough --dev=eth1`], env);
    try {
      await assert.rejects(startQemu(ns, ['-netdev', `tap,id=n0,helper=${BIN} helper --mode=passthrough --dev=eth1`], env), /passthru/);
    } finally {
      await q.quit();
    }
    await eventually('cleanup', () => macvtaps().length === 0 && records().length === 0);
  });
});

describe('SR-IOV through the helper (fake sysfs, VFs are veths)', { skip }, () => {
  let sr: FakeSriov;
  let dir: string;
  let env: NodeJS.ProcessEnv;
  before(() => {
    sr = createFakeSriov({ vfs: 2 });
    dir = mkdtempSync(join(tmpdir(), 'qnh-sriov-h-'));
    mkdirSync(join(dir, 'state'));
    writeFileSync(join(dir, 'acl.conf'), 'allow all\n');
    env = { ...process.env, QEMU_NET_HELPER_ACL: join(dir, 'acl.conf'), QEMU_NET_HELPER_STATE_DIR: join(dir, 'state'), QEMU_NET_HELPER_SYSFS: sr.root };
  });
  after(() => {
    sr.destroy();
    rmSync(dir, { recursive: true, force: true });
  });

  it('--mode=passthrough on a PF: each QEMU gets its own VF, the third is refused (exit 9), all restored after', async () => {
    const macOf = (vf: string): string => (sr.ns.linkDetails(vf) as { address: string }).address;
    const before0 = sr.vfs.map((v) => macOf(v.netdev!));
    const helper = (mac: string): string[] => ['-netdev', `tap,id=n0,helper=${BIN} helper --mode=passthrough --dev=${sr.pf} --mac=${mac}`];
    const q1 = await startQemu(sr.ns, helper('52:54:00:00:02:01'), env);
    const q2 = await startQemu(sr.ns, helper('52:54:00:00:02:02'), env);
    try {
      const vfOf = (pid: number): string => {
        const held = macvtapsHeldBy(sr.ns, pid);
        assert.equal(held.length, 1);
        return (sr.ns.linkDetails(held[0]!) as { link: string }).link;
      };
      const v1 = vfOf(q1.proc.pid!);
      const v2 = vfOf(q2.proc.pid!);
      assert.notEqual(v1, v2, 'two guests never share a VF');
      assert.equal(macOf(v1), '52:54:00:00:02:01');
      assert.equal(macOf(v2), '52:54:00:00:02:02');
      const claims = readdirSync(join(dir, 'state/vf')).filter((f) => f.endsWith('.json'));
      assert.equal(claims.length, 2);
      await assert.rejects(startQemu(sr.ns, helper('52:54:00:00:02:03'), env), /bridge helper failed|no candidate worked|VF/);
    } finally {
      await q1.quit();
      await q2.quit();
    }
    await eventually('VF claims released and MACs restored', () =>
      readdirSync(join(dir, 'state/vf')).filter((f) => f.endsWith('.json')).length === 0 &&
      sr.vfs.every((v, i) => macOf(v.netdev!) === before0[i]));
    assert.deepEqual(sr.ns.links().filter((l) => l.startsWith('macvtap')), []);
  });
});

describe('libvirt-style: the socketpair peer hands the fd on to QEMU', { skip }, () => {
  it('the watcher follows the macvtap fd to QEMU and removes the macvtap when QEMU quits, though the peer lives on', async () => {
    const { runHelperLikeLibvirt, closeAll } = await import('../lib/helper-run.js');
    const ns = NetNs.create();
    const wire = NetNs.create('qnhw');
    const dir = mkdtempSync(join(tmpdir(), 'qnh-lv-'));
    try {
      ns.ip('link', 'add', 'eth1', 'type', 'veth', 'peer', 'name', 'weth1', 'netns', wire.name);
      ns.ip('link', 'set', 'eth1', 'up');
      writeFileSync(join(dir, 'acl.conf'), 'allow all\n');
      const env = { ...process.env, QEMU_NET_HELPER_ACL: join(dir, 'acl.conf'), QEMU_NET_HELPER_STATE_DIR: join(dir, 'state'), QEMU_NET_HELPER_CONFIG: join(dir, 'config') };
      // This test process plays libvirtd: it makes the socketpair, receives the fd...
      const r = await runHelperLikeLibvirt(ns, ['--use-vnet', '--br=lan', '--fd={FD}', '--mode=vepa', '--dev=eth1', '--mac=52:54:00:00:04:01'], env);
      assert.equal(r.code, 0, r.stderr);
      assert.equal(r.fds.length, 1);
      // ...hands it to QEMU as fd 3 and drops its own copy.
      const qemu = ns.spawn('/usr/bin/qemu-system-x86_64', ['-machine', 'none', '-nodefaults', '-display', 'none', '-S', '-netdev', 'tap,id=n0,fd=3'], { stdio: ['ignore', 'ignore', 'pipe', r.fds[0]!] });
      closeAll(r.fds);
      const exited = new Promise((res) => qemu.once('exit', res));
      const macvtaps = (): string[] => ns.links().filter((l) => l.startsWith('macvtap'));
      const recordOwner = (): number | undefined => {
        const f = readdirSync(join(dir, 'state/endpoints'))[0];
        return f ? (JSON.parse(readFileSync(join(dir, 'state/endpoints', f), 'utf8')) as { owner: { pid: number } }).owner.pid : undefined;
      };
      await eventually('the watcher adopts QEMU as owner', () => recordOwner() === qemu.pid, 10000);
      assert.equal(macvtaps().length, 1, 'the macvtap lives while QEMU holds it');
      qemu.kill('SIGTERM');
      await exited;
      await eventually('macvtap removed after QEMU quit', () => macvtaps().length === 0 && readdirSync(join(dir, 'state/endpoints')).length === 0, 10000);
    } finally {
      ns.destroy();
      wire.destroy();
      rmSync(dir, { recursive: true, force: true });
    }
  });
});
