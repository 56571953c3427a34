// The NAT kernel on a real kernel. H is the host: its uplink up0
// (192.0.2.1/24) leads to U (192.0.2.2), which has no route to the NAT
// subnet, so a reply from U can only come back if the host masqueraded the
// request. C is a DHCP client plugged into the NAT bridge through a veth.
import assert from 'node:assert/strict';
import { chmodSync, existsSync, mkdtempSync, readdirSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, before, describe, it } from 'node:test';
import { ExitCode } from '../../src/errors.js';
import { closeFd } from '../../src/sys/libc.js';
import { tunGetIff } from '../../src/sys/tun.js';
import { NetNs } from '../lib/netns.js';
import {
  assertJournaled, releaseInNs, setupCrashingInNs, setupFailsInNs, setupInNs, setupInNsAsync, type HostOverrides, type JsonRequest, type Setup,
} from './kernel-driver.test.js';

const BR = 'qnhnat0';
const TABLE = `qemu_net_helper_${BR}`;

describe('nat kernel', () => {
  let h: NetNs;
  let u: NetNs;
  let cl: NetNs;
  let dir: string;
  let host: HostOverrides;
  let baseline: string[];
  let script: string;
  const req = (r: Partial<JsonRequest> = {}): JsonRequest => ({ mode: 'nat', vnetHdr: true, queues: 1, params: {}, ...r });
  const netDir = (): string => join(dir, 'nat', BR);
  const dnsmasqPid = (): number => Number(readFileSync(join(netDir(), 'dnsmasq.pid'), 'utf8').trim());
  const tableExists = (): boolean => {
    try { h.exec('nft', 'list', 'table', 'ip', TABLE); return true; } catch { return false; }
  };
  const alive = (pid: number): boolean => {
    try {
      return !/\) [ZX] /.test(readFileSync(`/proc/${pid}/stat`, 'latin1'));
    } catch { return false; }
  };

  before(() => {
    h = NetNs.create('qnhnH');
    u = NetNs.create('qnhnU');
    cl = NetNs.create('qnhnC');
    h.ip('link', 'add', 'up0', 'type', 'veth', 'peer', 'name', 'up1', 'netns', u.name);
    h.ip('addr', 'add', '192.0.2.1/24', 'dev', 'up0');
    h.ip('link', 'set', 'up0', 'up');
    u.ip('addr', 'add', '192.0.2.2/24', 'dev', 'up1');
    u.ip('link', 'set', 'up1', 'up');
    // U counts echo requests by source address: it must see the host's uplink address.
    u.exec('nft', 'add table ip seen; add chain ip seen in { type filter hook input priority 0; }; add rule ip seen in ip saddr 192.0.2.1 icmp type echo-request counter comment "from-host"');
    dir = mkdtempSync(join(tmpdir(), 'qnh-nat-'));
    host = { stateDir: dir };
    script = join(dir, 'udhcpc.sh');
    writeFileSync(script, [
      '#!/bin/sh',
      'case "$1" in',
      '  bound|renew)',
      '    ip addr flush dev "$interface"',
      '    ip addr add "$ip/$mask" dev "$interface"',
      '    [ -z "$router" ] || ip route replace default via "${router%% *}" dev "$interface"',
      '    echo "$ip $mask ${router%% *}" > "$LEASE_OUT";;',
      'esac',
      'exit 0',
      '',
    ].join('\n'));
    chmodSync(script, 0o755);
    baseline = h.links().sort();
  });
  after(() => {
    cl?.destroy();
    h?.destroy(); // kills the namespace's dnsmasq too
    u?.destroy();
    if (dir) rmSync(dir, { recursive: true, force: true });
  });
  const done = (s: Setup): void => {
    for (const fd of s.fds) closeFd(fd);
  };
  const gone = (pid: number): void => {
    assert.ok(!alive(pid), 'dnsmasq stopped');
    assert.ok(!tableExists(), 'nft table removed');
    assert.ok(!h.links().includes(BR), 'bridge removed');
    assert.deepEqual(readdirSync(netDir()).sort(), ['dnsmasq.leases'], 'only the lease file is kept');
  };

  it('creates bridge, nft table, ip_forward and dnsmasq; a DHCP client gets its reserved lease; NAT to the uplink works; release removes it all', () => {
    const t0 = Date.now();
    const s = setupInNs(h, 'nat', req({ guestIp: '10.213.0.50', mac: '52:54:00:13:00:50' }), host);
    let pid = 0;
    try {
      assert.equal(s.ep.info.bridge, BR);
      assert.equal(s.ep.info.subnet, '10.213.0.0/24');
      assert.equal(s.ep.info.gateway, '10.213.0.1');
      assert.equal(s.ep.info.networkCreated, true);
      assert.equal(tunGetIff(s.fds[0]!)?.name, s.ep.ifname);
      assert.deepEqual(s.ep.owned.map((o) => o.kind), ['nat-network', 'nat-reservation']);
      assertJournaled(s, 'nat');
      const br = JSON.parse(h.ip('-4', '-j', '-d', 'addr', 'show', 'dev', BR)) as { addr_info: { local: string; prefixlen: number }[]; flags: string[]; linkinfo: { info_kind: string } }[];
      assert.equal(br[0]!.linkinfo.info_kind, 'bridge');
      assert.ok(br[0]!.flags.includes('UP'));
      assert.deepEqual(br[0]!.addr_info.map((a) => `${a.local}/${a.prefixlen}`), ['10.213.0.1/24']);
      assert.equal((h.linkDetails(s.ep.ifname) as { master: string }).master, BR);
      assert.match(h.exec('nft', 'list', 'table', 'ip', TABLE), /masquerade/);
      assert.equal(h.exec('cat', '/proc/sys/net/ipv4/ip_forward').trim(), '1');
      pid = dnsmasqPid();
      assert.ok(alive(pid), 'dnsmasq runs');
      assert.equal(readFileSync(`/proc/${pid}/comm`, 'utf8').trim(), 'dnsmasq');
      assert.equal(h.exec('ip', 'netns', 'identify', String(pid)).trim(), h.name, 'dnsmasq runs in the namespace of the network');
      assert.ok(existsSync(join(netDir(), 'dnsmasq.leases')));
      const setupMs = Date.now() - t0;

      // The client plays the guest: same MAC as the reservation.
      cl.ip('link', 'add', 'eth0', 'address', '52:54:00:13:00:50', 'type', 'veth', 'peer', 'name', 'cH', 'netns', h.name);
      h.ip('link', 'set', 'cH', 'master', BR, 'up');
      cl.ip('link', 'set', 'eth0', 'up');
      const leaseOut = join(dir, 'lease.out');
      const t1 = Date.now();
      execIn(cl, ['busybox', 'udhcpc', '-i', 'eth0', '-n', '-q', '-t', '5', '-T', '1', '-s', script], { LEASE_OUT: leaseOut });
      const dhcpMs = Date.now() - t1;
      assert.equal(readFileSync(leaseOut, 'utf8').trim(), '10.213.0.50 24 10.213.0.1', 'the reserved address, with the bridge as router');
      assert.match(readFileSync(join(netDir(), 'dnsmasq.leases'), 'utf8'), /52:54:00:13:00:50 10\.213\.0\.50 /);

      cl.exec('busybox', 'ping', '-c', '1', '-W', '2', '192.0.2.2');
      assert.match(u.exec('nft', 'list', 'table', 'ip', 'seen'), /counter packets [1-9]\d* bytes/, "U saw the host's uplink address as source");
      assert.match(h.exec('nft', 'list', 'table', 'ip', TABLE), /counter packets [1-9]\d* bytes \d+ masquerade/);
      // Unsolicited traffic into the NAT subnet is refused even with a route to it.
      u.ip('route', 'add', '10.213.0.0/24', 'via', '192.0.2.1');
      assert.throws(() => u.exec('busybox', 'ping', '-c', '1', '-W', '1', '10.213.0.50'));
      assert.match(h.exec('nft', 'list', 'table', 'ip', TABLE), /counter packets [1-9]\d* bytes \d+ reject comment "unsolicited-inbound"/);
      u.ip('route', 'del', '10.213.0.0/24');
      process.stderr.write(`# nat: setup ${s.ms.toFixed(1)} ms in-process, ${setupMs} ms with driver; DHCP lease ${dhcpMs} ms\n`);
    } finally {
      try { h.ip('link', 'del', 'cH'); } catch { /* gone */ }
      done(s);
      releaseInNs(h, 'nat', s.ep.owned, host);
    }
    gone(pid);
    releaseInNs(h, 'nat', s.ep.owned, host); // idempotent
    assert.deepEqual(h.links().sort(), baseline);
  });

  it('a second guest reuses the network; it goes only when no other port is left', () => {
    const a = setupInNs(h, 'nat', req(), host);
    const b = setupInNs(h, 'nat', req(), host);
    const pid = dnsmasqPid();
    try {
      assert.equal(a.ep.info.networkCreated, true);
      assert.equal(b.ep.info.networkCreated, false);
      assert.equal(b.ep.info.subnet, a.ep.info.subnet);
      // A user's own port on the bridge counts as a user too.
      h.ip('link', 'add', 'extra0', 'type', 'veth', 'peer', 'name', 'extra1');
      h.ip('link', 'set', 'extra0', 'master', BR);
      done(a);
      releaseInNs(h, 'nat', a.ep.owned, host);
      assert.ok(h.links().includes(BR) && alive(pid) && tableExists(), 'still used by the second guest');
      done(b);
      releaseInNs(h, 'nat', b.ep.owned, host);
      assert.ok(h.links().includes(BR) && alive(pid), 'still used by the extra port');
      h.ip('link', 'del', 'extra0');
      // The last guest's release already happened; a late release (e.g. gc) finds no user left.
      releaseInNs(h, 'nat', b.ep.owned, host);
    } finally {
      done(a);
      done(b);
    }
    gone(pid);
  });

  it('helpers started at the same moment agree: one creates the network, the others join it', async () => {
    const all = await Promise.all([1, 2, 3].map(() => setupInNsAsync(h, 'nat', req(), host)));
    try {
      assert.equal(all.filter((s) => s.ep.info.networkCreated === true).length, 1, 'exactly one helper created the network');
      assert.equal(new Set(all.map((s) => s.ep.info.subnet)).size, 1);
      const ports = JSON.parse(h.ip('-j', 'link', 'show', 'master', BR)) as { ifname: string }[];
      assert.deepEqual(ports.map((p) => p.ifname).sort(), all.map((s) => s.ep.ifname).sort());
    } finally {
      for (const s of all) done(s);
      // The taps are gone with their fds: whichever release comes first finds no user left.
      releaseInNs(h, 'nat', all[1]!.ep.owned, host);
      assert.ok(!h.links().includes(BR), 'the first release after every guest quit removes the network');
      releaseInNs(h, 'nat', all[0]!.ep.owned, host);
      releaseInNs(h, 'nat', all[2]!.ep.owned, host);
    }
    assert.ok(!h.links().includes(BR));
    assert.ok(!tableExists());
    assert.deepEqual(h.links().sort(), baseline);
  });

  it('a helper killed after any setup step leaves only journaled objects; releasing them leaves nothing', () => {
    const journalFile = join(dir, 'journal');
    let step = 1;
    for (; step < 20; step++) {
      const r = setupCrashingInNs(h, 'nat', req({ guestIp: '10.213.0.60', mac: '52:54:00:13:00:60', params: { dhcpPing: false } }), { ...host, journalFile }, step);
      if (!r.killed) {
        done(r.setup!);
        releaseInNs(h, 'nat', r.setup!.ep.owned, host);
        break;
      }
      releaseInNs(h, 'nat', r.journal.map((j) => j.obj), host);
      assert.ok(!h.links().includes(BR), `step ${step}: bridge removed`);
      assert.ok(!tableExists(), `step ${step}: table removed`);
      assert.ok(!existsSync(join(netDir(), 'dnsmasq.pid')), `step ${step}: dnsmasq stopped`);
      assert.deepEqual(h.links().sort(), baseline);
    }
    assert.ok(step > 2);
    assert.ok(!h.links().includes(BR));
    assert.deepEqual(h.links().sort(), baseline);
  });

  it('up (persist): the tap is an owned object; releasing it and the network leaves nothing', () => {
    const s = setupInNs(h, 'nat', req({ persist: true, params: { dhcpPing: false } }), host);
    done(s);
    const pid = dnsmasqPid();
    assert.deepEqual(s.ep.owned.map((o) => o.kind), ['nat-network', 'link']);
    assertJournaled(s, 'nat');
    assert.ok(h.links().includes(s.ep.ifname), 'persistent tap survives its fd');
    releaseInNs(h, 'nat', s.ep.owned, host);
    gone(pid);
    assert.deepEqual(h.links().sort(), baseline);
  });

  it('heals a network whose dnsmasq died; keeps the existing subnet', () => {
    const a = setupInNs(h, 'nat', req({ subnet: '10.99.0.0/28', params: { dhcpPing: false } }), host);
    try {
      assert.equal(a.ep.info.subnet, '10.99.0.0/28');
      assert.deepEqual(a.ep.info.dhcpRange, { start: '10.99.0.2', end: '10.99.0.14' });
      process.kill(dnsmasqPid(), 'SIGKILL');
      const b = setupInNs(h, 'nat', req({ params: { dhcpPing: false } }), host);
      done(b);
      assert.equal(b.ep.info.subnet, '10.99.0.0/28');
      assert.ok(alive(dnsmasqPid()), 'dnsmasq restarted');
      // The restarted daemon hands out dynamic leases (no ping check here: params.dhcpPing=false).
      cl.ip('link', 'add', 'eth5', 'type', 'veth', 'peer', 'name', 'cH5', 'netns', h.name);
      h.ip('link', 'set', 'cH5', 'master', BR, 'up');
      cl.ip('link', 'set', 'eth5', 'up');
      const leaseOut = join(dir, 'lease5.out');
      execIn(cl, ['busybox', 'udhcpc', '-i', 'eth5', '-n', '-q', '-t', '5', '-T', '1', '-s', script], { LEASE_OUT: leaseOut });
      assert.match(readFileSync(leaseOut, 'utf8').trim(), /^10\.99\.0\.(\d+) 28 10\.99\.0\.1$/);
      const host5 = Number(/^10\.99\.0\.(\d+)/.exec(readFileSync(leaseOut, 'utf8'))![1]);
      assert.ok(host5 >= 2 && host5 <= 14, 'inside the DHCP range');
      h.ip('link', 'del', 'cH5');
      const wrong = setupFailsInNs(h, 'nat', req({ subnet: '10.98.0.0/24' }), host);
      assert.equal(wrong.exitCode, ExitCode.CONFIG);
      assert.match(wrong.message, /already uses 10\.99\.0\.0\/28/);
      releaseInNs(h, 'nat', b.ep.owned, host);
    } finally {
      done(a);
      releaseInNs(h, 'nat', a.ep.owned, host);
    }
    assert.ok(!h.links().includes(BR));
    assert.ok(!tableExists());
  });

  it('errors: a foreign bridge with the name, an overlapping or malformed subnet, a failure after the network exists (rolled back)', () => {
    h.addBridge('mine0');
    const foreign = setupFailsInNs(h, 'nat', req({ dev: 'mine0' }), host);
    assert.equal(foreign.exitCode, ExitCode.CONFIG);
    assert.match(foreign.message, /'mine0' exists and is not a NAT network made by qemu-net-helper/);
    h.ip('link', 'del', 'mine0');
    const overlap = setupFailsInNs(h, 'nat', req({ subnet: '192.0.2.0/25' }), host);
    assert.equal(overlap.exitCode, ExitCode.CONFIG);
    assert.match(overlap.message, /overlaps 192\.0\.2\.1\/24 on up0/);
    for (const bad of ['10.0.0.1/24', '10.0.0.0/31', '300.1.1.0/24', 'nonsense']) {
      assert.equal(setupFailsInNs(h, 'nat', req({ subnet: bad }), host).exitCode, ExitCode.USAGE, bad);
    }
    const noMac = setupFailsInNs(h, 'nat', req({ guestIp: '10.213.0.9' }), host);
    assert.equal(noMac.exitCode, ExitCode.USAGE);
    // The tap cannot be made (its name is taken by a veth): network, table and dnsmasq go again.
    const late = setupFailsInNs(h, 'nat', req({ params: { ifname: 'up0' } }), host);
    assert.equal(late.exitCode, ExitCode.SETUP_FAILED);
    assert.deepEqual(late.undoFailures, []);
    assert.ok(!h.links().includes(BR), 'bridge rolled back');
    assert.ok(!tableExists(), 'table rolled back');
    assert.ok(!existsSync(join(netDir(), 'dnsmasq.pid')), 'dnsmasq rolled back');
    assert.deepEqual(h.links().sort(), baseline);
  });
});

function execIn(ns: NetNs, argv: string[], env: Record<string, string>): string {
  // NetNs.exec has no env parameter; `env` in front does the same.
  return ns.exec('env', ...Object.entries(env).map(([k, v]) => `${k}=${v}`), ...argv);
}
