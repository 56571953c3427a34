// Forged records must not make gc touch anything that is not ours. Records
// are written straight into the state directory (owner: a process that is
// gone, so gc acts on them at once) naming an unrelated veth, the nftables
// table `ip filter`, a qemu_net_helper_* table without our comment, an
// unrelated bridge, links whose MAC a forged SR-IOV record would change, and
// a dnsmasq pid file pointing at an unrelated process. `qemu-net-helper gc`
// runs as root through the CLI in a throwaway namespace; in the same run real
// endpoints made by `up` (their QEMU gone) are released as usual.
import assert from 'node:assert/strict';
import { spawn, spawnSync, type ChildProcess } from 'node:child_process';
import { existsSync, mkdirSync, mkdtempSync, readdirSync, readFileSync, rmSync, symlinkSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, before, describe, it } from 'node:test';
import { createFakeSriov, vfPci, type FakeSriov } from '../lib/fake-sysfs.js';
import { BIN } from '../lib/paths.js';

type Json = any; // eslint-disable-line @typescript-eslint/no-explicit-any

describe('gc on forged records (release checks identity)', () => {
  let f: FakeSriov;
  let dir: string;
  let state: string;
  let env: NodeJS.ProcessEnv;
  let sleeper: ChildProcess;
  /** A process that has exited: records naming it as owner are dead. */
  let dead: { pid: number; startTime: string };

  const cli = (args: string[]): { code: number | null; out: string; err: string; json: Json } => {
    const r = spawnSync('ip', ['netns', 'exec', f.ns.name, process.execPath, BIN, ...args], { env, encoding: 'utf8' });
    let json: unknown = null;
    try { json = JSON.parse(r.stdout); } catch { /* not JSON */ }
    return { code: r.status, out: r.stdout, err: r.stderr, json };
  };
  const ns = (): FakeSriov['ns'] => f.ns;
  const link = (name: string): { ifindex: number; address: string; flags: string[]; ifalias?: string } | null => {
    try { return ns().linkDetails(name) as never; } catch { return null; }
  };
  const alive = (pid: number): boolean => {
    try { return !/\) [ZX] /.test(readFileSync(`/proc/${pid}/stat`, 'latin1')); } catch { return false; }
  };
  const writeRecord = (id: string, owned: { backend: string; obj: { kind: string; data: Record<string, unknown> } }[]): void => {
    mkdirSync(join(state, 'endpoints'), { recursive: true, mode: 0o700 });
    const rec = {
      version: 1, id, createdAt: new Date().toISOString(), owner: dead, watcher: null, lifetime: 'owner',
      mode: 'bridge', kernel: 'bridge', transport: 'tap', ifname: '', mac: null, mtu: 1500, devicePath: null, owned, info: {},
    };
    writeFileSync(join(state, 'endpoints', `${id}.json`), JSON.stringify(rec));
  };
  /** What gc would see if the QEMU of a real endpoint had exited. */
  const ownerGone = (id: string): void => {
    const file = join(state, 'endpoints', `${id}.json`);
    const rec = JSON.parse(readFileSync(file, 'utf8')) as Json;
    rec.owner = dead;
    rec.lifetime = 'owner';
    writeFileSync(file, JSON.stringify(rec));
  };

  before(() => {
    f = createFakeSriov({ vfs: 2 });
    dir = mkdtempSync(join(tmpdir(), 'qnh-forged-'));
    state = join(dir, 'state');
    env = { ...process.env, QEMU_NET_HELPER_STATE_DIR: state, QEMU_NET_HELPER_CONFIG: join(dir, 'config'), QEMU_NET_HELPER_SYSFS: f.root };
    const t = spawnSync('true');
    dead = { pid: t.pid!, startTime: '1' };
    ns().ip('link', 'set', 'lo', 'up');
    ns().addBridge('br0');
    // Someone else's objects, made without qemu-net-helper.
    ns().ip('link', 'add', 'victimv', 'address', '02:00:00:00:0a:01', 'type', 'veth', 'peer', 'name', 'victimvb');
    ns().ip('link', 'set', 'victimv', 'up');
    ns().addBridge('fakebr0');
    ns().exec('nft', 'add table ip filter; add chain ip filter input { type filter hook input priority 0; }; add rule ip filter input ip saddr 192.0.2.9 counter drop comment "theirs"');
    ns().exec('nft', 'add table ip qemu_net_helper_x; add chain ip qemu_net_helper_x passing { type filter hook forward priority 0; }');
    ns().ip('link', 'set', 'pf0v0', 'address', '02:00:00:00:0b:00', 'up');
    ns().ip('link', 'set', 'pf0v1', 'address', '02:00:00:00:0b:01', 'up');
    sleeper = spawn('sleep', ['600'], { stdio: 'ignore' });
  });
  after(() => {
    if (sleeper?.pid && alive(sleeper.pid)) sleeper.kill('SIGKILL');
    f?.destroy(); // kills the namespace's dnsmasq too
    if (dir) rmSync(dir, { recursive: true, force: true });
  });

  it('gc leaves every forged object alone and releases the real endpoints', () => {
    // Real endpoints: a persistent tap and a NAT network with its tap; one more tap that stays.
    const tap = cli(['up', '--mode=bridge', '--dev=br0', '--id=real-tap', '--json']);
    assert.equal(tap.code, 0, tap.err);
    const nat = cli(['up', '--mode=nat', '--id=real-nat', '--json']);
    assert.equal(nat.code, 0, nat.err);
    const keep = cli(['up', '--mode=bridge', '--dev=br0', '--id=keep', '--json']);
    assert.equal(keep.code, 0, keep.err);
    const realTap = tap.json.endpoint.ifname as string;
    const natTap = nat.json.endpoint.ifname as string;
    const keepTap = keep.json.endpoint.ifname as string;
    assert.equal(link(realTap)?.ifalias, 'qemu-net-helper:real-tap', 'up marks the tap it makes');
    assert.equal(link('qnhnat0')?.ifalias, 'qemu-net-helper:nat-network', 'the NAT bridge is marked');
    const natDnsmasq = Number(readFileSync(join(state, 'nat/qnhnat0/dnsmasq.pid'), 'utf8'));
    assert.ok(alive(natDnsmasq));
    ownerGone('real-tap');
    ownerGone('real-nat');

    // (a) links: an unrelated veth under every kind of record that could name it,
    // and the live tap of endpoint 'keep' under a record that copies its marker.
    const victim = link('victimv')!;
    const keepLink = link(keepTap)!;
    writeRecord('forged-links', [
      { backend: 'veth', obj: { kind: 'veth', data: { ifname: 'victimv', ifindex: victim.ifindex, hostIfname: 'victimvb' } } },
      { backend: 'veth', obj: { kind: 'veth', data: { ifname: 'victimv', ifindex: victim.ifindex, marker: 'qemu-net-helper:forged-links' } } },
      { backend: 'bridge', obj: { kind: 'link', data: { ifname: 'victimv' } } },
      { backend: 'macvtap', obj: { kind: 'macvtap', data: { ifname: 'victimv', ifindex: victim.ifindex, marker: 'qemu-net-helper:forged-links' } } },
      { backend: 'bridge', obj: { kind: 'link', data: { ifname: 'fakebr0', ifindex: link('fakebr0')!.ifindex, onlyIfNoPorts: true, marker: 'qemu-net-helper:forged-links' } } },
      { backend: 'bridge', obj: { kind: 'link', data: { ifname: keepTap, ifindex: keepLink.ifindex, marker: keepLink.ifalias } } },
      { backend: 'route', obj: { kind: 'route', data: { dst: '0.0.0.0/0', dev: 'victimv', ifindex: victim.ifindex } } },
    ]);

    // (b) + (d) NAT state naming `ip filter`, a qemu_net_helper_* table that is not
    // ours, an unrelated bridge, and a dnsmasq pid file naming an unrelated process.
    const natState = (bridge: string, table: string, bridgeIndex: number): void => {
      const d = join(state, 'nat', bridge);
      mkdirSync(d, { recursive: true, mode: 0o755 });
      writeFileSync(join(d, 'network.json'), JSON.stringify({
        bridge, bridgeIndex, subnet: '10.99.0.0/24', gateway: '10.99.0.1', table,
        dnsmasq: { dir: d, iface: bridge, rangeStart: '10.99.0.2', rangeEnd: '10.99.0.254', netmask: '255.255.255.0', leaseTime: '1h', ping: false },
      }));
      writeFileSync(join(d, 'dnsmasq.pid'), `${sleeper.pid}\n`);
    };
    natState('fakebr0', 'filter', link('fakebr0')!.ifindex);
    natState('x', 'qemu_net_helper_x', 4242);
    writeRecord('forged-nat', [
      { backend: 'nat', obj: { kind: 'nat-network', data: { bridge: 'fakebr0' } } },
      { backend: 'nat', obj: { kind: 'nat-network', data: { bridge: 'x' } } },
      { backend: 'nat', obj: { kind: 'nat-network', data: { bridge: '../../../tmp' } } },
    ]);

    // (c) SR-IOV: settings "to restore" onto links that are not the VF the record names.
    const sriov = (endpointId: string, pci: string, pf: string, vfIndex: number, mac: string): Json => ({
      pci, pf, vfIndex, ifname: 'victimv', control: 'netdev',
      saved: { mac, vlan: 0, qos: 0, up: false }, applied: { mac: '52:54:00:00:00:99', up: true }, owner: dead, endpointId,
    });
    const claim = (pci: string, endpointId: string, owner: Json, data: Json): void => {
      mkdirSync(join(state, 'vf'), { recursive: true, mode: 0o700 });
      writeFileSync(join(state, 'vf', `${pci}.json`), JSON.stringify({ version: 1, pci, owner, endpointId, claimedAt: new Date().toISOString(), claimedBy: 1, data }));
    };
    const notInSysfs = sriov('forged-vf', '0000:99:00.1', 'victimv', 0, '02:de:ad:00:00:01');
    const wrongIndex = sriov('forged-vf', vfPci('03', 0), 'pf0', 1, '02:de:ad:00:00:02');
    const noClaim = sriov('forged-vf', vfPci('03', 1), 'pf0', 1, '02:de:ad:00:00:03');
    writeRecord('forged-vf', [
      { backend: 'sriov', obj: { kind: 'sriov-vf', data: notInSysfs } },
      { backend: 'sriov', obj: { kind: 'sriov-vf', data: wrongIndex } },
      { backend: 'sriov', obj: { kind: 'sriov-vf', data: noClaim } },
    ]);
    claim('0000:99:00.1', 'forged-vf', dead, notInSysfs);
    claim(vfPci('03', 0), 'forged-vf', dead, wrongIndex);
    // A stale claim alone (gc's claim sweep) whose saved data belongs to another claim.
    claim(vfPci('03', 1), 'someone', dead, { ...sriov('forged-vf', vfPci('03', 1), 'pf0', 1, '02:de:ad:00:00:04') });

    const before = { victim: link('victimv'), v0: link('pf0v0'), v1: link('pf0v1'), fakebr: link('fakebr0'), keep: link(keepTap) };
    const g = cli(['gc', '--json']);
    assert.equal(g.code, 0, `${g.err}\n${g.out}`);

    // Nothing of theirs was touched.
    for (const [name, was] of [['victimv', before.victim], ['pf0v0', before.v0], ['pf0v1', before.v1], ['fakebr0', before.fakebr], [keepTap, before.keep]] as const) {
      const now = link(name);
      assert.ok(now, `${name} still exists`);
      assert.equal(now.ifindex, was!.ifindex, `${name} is the same link`);
      assert.equal(now.address, was!.address, `${name} kept its MAC`);
      assert.equal(now.flags.includes('UP'), was!.flags.includes('UP'), `${name} kept its up state`);
    }
    assert.ok(link('victimvb'), 'the peer of the unrelated veth still exists');
    assert.match(ns().exec('nft', 'list', 'table', 'ip', 'filter'), /ip saddr 192\.0\.2\.9 counter packets \d+ bytes \d+ drop comment "theirs"/, 'ip filter and its rule are intact');
    assert.match(ns().exec('nft', 'list', 'table', 'ip', 'qemu_net_helper_x'), /chain passing/, 'a prefixed table without our comment is intact');
    assert.ok(alive(sleeper.pid!), 'the process named by a forged dnsmasq pid file was not signalled');

    // The real endpoints were released as usual.
    assert.equal(link(realTap), null, 'the real tap was deleted');
    assert.equal(link(natTap), null, 'the real NAT tap was deleted');
    assert.equal(link('qnhnat0'), null, 'the real NAT bridge was deleted');
    assert.throws(() => ns().exec('nft', 'list', 'table', 'ip', 'qemu_net_helper_qnhnat0'), /No such file or directory/, 'the real NAT table was deleted');
    assert.ok(!alive(natDnsmasq), 'the real dnsmasq was stopped');

    // gc reported what it left alone, and keeps no record of forged objects (nothing to retry).
    const rep = g.json.endpoints.released as { id: string; released: string[]; skipped: string[]; failed: string[] }[];
    const byId = Object.fromEntries(rep.map((r) => [r.id, r]));
    assert.deepEqual(Object.keys(byId).sort(), ['forged-links', 'forged-nat', 'forged-vf', 'real-nat', 'real-tap']);
    for (const r of rep) assert.deepEqual(r.failed, [], `${r.id}: nothing failed`);
    assert.equal(byId['forged-links']!.skipped.length, 7, byId['forged-links']!.skipped.join('\n'));
    assert.ok(byId['forged-links']!.skipped.some((s) => /carries marker .* not endpoint forged-links's/.test(s)));
    assert.ok(byId['forged-nat']!.skipped.some((s) => /nft table "filter" is not the table/.test(s)), byId['forged-nat']!.skipped.join('\n'));
    assert.ok(byId['forged-nat']!.skipped.some((s) => /qemu_net_helper_x' does not carry our comment/.test(s)));
    assert.ok(byId['forged-nat']!.skipped.some((s) => /'fakebr0' does not carry our marker/.test(s)));
    assert.equal(byId['forged-vf']!.skipped.length, 3, byId['forged-vf']!.skipped.join('\n'));
    assert.deepEqual(byId['real-tap']!.skipped, []);
    assert.deepEqual(byId['real-nat']!.skipped, []);
    assert.deepEqual(readdirSync(join(state, 'endpoints')).sort(), ['keep.json']);
    assert.deepEqual(readdirSync(join(state, 'vf')).filter((n) => n.endsWith('.json')), [], 'stale forged claims are dropped without restoring anything');

    // The endpoint whose tap a forged record named is still released normally.
    const d = cli(['down', 'keep', '--json']);
    assert.equal(d.code, 0, d.err);
    assert.deepEqual(d.json.skipped, []);
    assert.equal(link(keepTap), null);
  });

  it('a symbolic link planted at a state subdirectory is refused, nothing is written through it', () => {
    const s2 = join(dir, 'state2');
    const elsewhere = join(dir, 'elsewhere');
    mkdirSync(s2, { mode: 0o711 });
    mkdirSync(elsewhere, { mode: 0o700 });
    symlinkSync(elsewhere, join(s2, 'endpoints'));
    const linksBefore = ns().links().sort();
    const r = spawnSync('ip', ['netns', 'exec', f.ns.name, process.execPath, BIN, 'up', '--mode=bridge', '--dev=br0', '--id=via-link', '--json'], {
      env: { ...env, QEMU_NET_HELPER_STATE_DIR: s2 }, encoding: 'utf8',
    });
    assert.notEqual(r.status, 0);
    assert.match(r.stdout + r.stderr, /is not a directory \(a symbolic link or a file\)/);
    assert.deepEqual(readdirSync(elsewhere), []);
    assert.deepEqual(ns().links().sort(), linksBefore, 'no tap left behind');
    assert.ok(existsSync(join(s2, 'endpoints')));
  });
});
