// A real container runtime runs our plugin: Debian's podman (CNI backend,
// state in a temp dir) starts busybox containers whose interface comes from
// qemu-net-helper: bridge mode (the container pings the bridge), macvlan vepa
// to a veth peer, a tap inside the sandbox that QEMU opens there, and nat (the
// container reaches an outside peer that has no route back to it: only
// through the host's masquerade). Removing a container calls DEL: afterwards
// no link, record, lease, NAT table or dnsmasq is left.
import assert from 'node:assert/strict';
import { execFileSync, spawn, spawnSync } from 'node:child_process';
import { existsSync, readdirSync, readFileSync } from 'node:fs';
import { join } from 'node:path';
import { after, afterEach, before, describe, it } from 'node:test';
import { listEndpoints } from '../../src/state/endpoints.js';
import { NetNs } from '../lib/netns.js';
import { havePodman, IMAGE, Podman } from '../lib/podman.js';
import { haveQemu, startQemu, tapsHeldBy } from '../lib/qemu.js';

const skip = havePodman() ? false : 'needs podman, runc, busybox-static and containernetworking-plugins: run scripts/setup.sh';

describe('podman (CNI backend) runs containers on our plugin', { skip }, () => {
  let h: NetNs;
  let peer: NetNs;
  let outside: NetNs;
  let pm: Podman;
  let baseline: string[];
  const leases = (): string[] => (existsSync(pm.ipamDir) ? readdirSync(pm.ipamDir).flatMap((n) => readdirSync(join(pm.ipamDir, n)).filter((f) => /^\d/.test(f))) : []);
  const ours = (extra: Record<string, unknown>, subnet?: string): Record<string, unknown> => ({
    type: 'qemu-net-helper', ...extra,
    ...(subnet ? { ipam: { type: 'host-local', subnet, dataDir: pm.ipamDir, ...(subnet.startsWith('10.97.') ? { gateway: '10.97.0.1' } : subnet.startsWith('10.96.') ? { rangeStart: '10.96.0.10' } : {}) } } : {}),
  });
  const ok = (r: { status: number | null; stdout: string; stderr: string }, what: string): string => {
    assert.equal(r.status, 0, `${what}: ${r.stderr.trim()}`);
    return r.stdout;
  };
  const sandboxOf = (name: string): string => ok(pm.run(['inspect', '-f', '{{.NetworkSettings.SandboxKey}}', name]), 'inspect').trim();
  const inSandbox = (key: string, ...args: string[]): any => spawnSyncJson('nsenter', [`--net=${key}`, 'ip', '-j', '-d', ...args]);

  before(() => {
    h = NetNs.create('qnhpH');
    peer = NetNs.create('qnhpP');
    h.addBridge('br0', '10.97.0.1/24');
    h.ip('link', 'add', 'up0', 'type', 'veth', 'peer', 'name', 'wp0', 'netns', peer.name);
    h.ip('link', 'set', 'up0', 'up');
    peer.ip('addr', 'add', '10.96.0.2/24', 'dev', 'wp0');
    peer.ip('link', 'set', 'wp0', 'up');
    // The outside world of the NAT network: 192.0.2.2 beyond up9, with no route to the NAT subnet.
    outside = NetNs.create('qnhpO');
    h.ip('link', 'add', 'up9', 'type', 'veth', 'peer', 'name', 'o9', 'netns', outside.name);
    h.ip('addr', 'add', '192.0.2.1/24', 'dev', 'up9');
    h.ip('link', 'set', 'up9', 'up');
    outside.ip('addr', 'add', '192.0.2.2/24', 'dev', 'o9');
    outside.ip('link', 'set', 'o9', 'up');
    pm = Podman.create(h);
    pm.network('qnhbr', ours({ mode: 'bridge', dev: 'br0' }, '10.97.0.0/24'));
    pm.network('qnhvepa', ours({ mode: 'vepa', dev: 'up0' }, '10.96.0.0/24'));
    pm.network('qnhtap', ours({ mode: 'bridge', transport: 'tap', dev: 'br0', owner: 40107, group: 40108, mac: '52:54:00:97:00:01' }, '10.97.0.0/24'));
    pm.network('qnhnat', ours({ mode: 'nat', dev: 'qnhnat6' }, '10.93.0.0/24'));
    baseline = h.links().sort();
  });
  after(() => {
    pm?.destroy();
    h?.destroy();
    peer?.destroy();
    outside?.destroy();
  });
  afterEach(() => {
    assert.deepEqual(h.links().sort(), baseline, 'no host link may be left behind');
    assert.deepEqual(listEndpoints(pm.stateDir), [], 'DEL removed every attachment record');
    assert.deepEqual(leases(), [], 'every address went back to host-local');
    assert.equal(h.exec('nft', 'list', 'tables').trim(), '', 'no NAT table may be left behind');
    const pids = execFileSync('ip', ['netns', 'pids', h.name], { encoding: 'utf8' }).split(/\s+/).filter(Boolean);
    assert.deepEqual(pids.filter((p) => readFileSync(`/proc/${p}/comm`, 'utf8').trim() === 'dnsmasq'), [], 'no dnsmasq may be left');
  });

  it('bridge mode: the container gets its address from host-local through our plugin and pings the bridge', () => {
    const out = ok(pm.run(['run', '--rm', '--network', 'qnhbr', IMAGE, 'sh', '-c', 'ip -o -4 addr show dev eth0 && ping -c 1 -W 5 10.97.0.1']), 'podman run');
    assert.match(out, /eth0\s+inet 10\.97\.0\.\d+\/24/);
    assert.match(out, /1 packets received/);
  });

  it('nat mode: the container, addressed by host-local in the NAT subnet, reaches the outside through the masquerade; podman rm removes the NAT network', () => {
    assert.doesNotMatch(outside.ip('route'), /10\.93\.|default/, 'the outside cannot answer the NAT subnet directly');
    ok(pm.run(['run', '-d', '--name', 'nat1', '--network', 'qnhnat', IMAGE, 'sleep', '600']), 'podman run -d');
    const out = ok(pm.run(['exec', 'nat1', 'sh', '-c', 'ip -o -4 addr show dev eth0 && ip route && ping -c 1 -W 5 192.0.2.2']), 'podman exec');
    assert.match(out, /eth0\s+inet 10\.93\.0\.\d+\/24/);
    assert.match(out, /default via 10\.93\.0\.1 dev eth0/);
    assert.match(out, /1 packets received/);
    assert.ok(h.links().includes('qnhnat6'), 'the NAT bridge is there while the container is');
    assert.match(h.exec('nft', 'list', 'table', 'ip', 'qemu_net_helper_qnhnat6'), /masquerade/);
    ok(pm.run(['rm', '-f', '-t', '0', 'nat1']), 'podman rm');
  });

  it('macvlan vepa on a veth uplink: the container pings the peer on the wire; podman rm calls DEL', () => {
    ok(pm.run(['run', '-d', '--name', 'vepa1', '--network', 'qnhvepa', IMAGE, 'sleep', '600']), 'podman run -d');
    const key = sandboxOf('vepa1');
    const l = inSandbox(key, 'link', 'show', 'dev', 'eth0')[0];
    assert.equal(l.linkinfo.info_kind, 'macvlan');
    assert.equal(l.linkinfo.info_data.mode, 'vepa');
    assert.equal(listEndpoints(pm.stateDir).length, 1, 'ADD recorded the attachment');
    assert.match(ok(pm.run(['exec', 'vepa1', 'ping', '-c', '1', '-W', '5', '10.96.0.2']), 'podman exec ping'), /1 packets received/);
    ok(pm.run(['rm', '-f', '-t', '0', 'vepa1']), 'podman rm');
  });

  it('tap transport: a tap of the given owner in the pod, bridged out to br0; QEMU in the pod opens it by name', { skip: haveQemu() ? false : 'needs qemu-system-x86' }, async () => {
    ok(pm.run(['run', '-d', '--name', 'vm1', '--network', 'qnhtap', IMAGE, 'sleep', '600']), 'podman run -d');
    const key = sandboxOf('vm1');
    const t = inSandbox(key, 'link', 'show', 'dev', 'eth0')[0];
    assert.equal(t.linkinfo.info_kind, 'tun');
    assert.equal(t.linkinfo.info_data.type, 'tap');
    assert.equal(t.linkinfo.info_data.user, 40107);
    assert.equal(t.linkinfo.info_data.group, 40108);
    assert.equal(t.address, '52:54:00:97:00:01');
    assert.ok(String(t.master).startsWith('qnhb'));
    const sandboxNs = { name: key, spawn: (cmd: string, args: string[], opts: object) => spawn('nsenter', [`--net=${key}`, cmd, ...args], opts) } as unknown as NetNs;
    const q = await startQemu(sandboxNs, ['-netdev', 'tap,id=n0,ifname=eth0,script=no,downscript=no']);
    try {
      assert.deepEqual(tapsHeldBy(q.proc.pid!), ['eth0'], 'QEMU holds the pod\'s tap');
    } finally {
      await q.quit();
    }
    ok(pm.run(['rm', '-f', '-t', '0', 'vm1']), 'podman rm');
  });
});

function spawnSyncJson(cmd: string, args: string[]): any {
  const r = spawnSync(cmd, args, { encoding: 'utf8' });
  if (r.status !== 0) throw new Error(`${cmd} ${args.join(' ')}: ${r.stderr}`);
  return JSON.parse(r.stdout);
}
