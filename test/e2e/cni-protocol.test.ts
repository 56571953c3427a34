// The CNI plugin driven the way a runtime drives it (environment + stdin,
// JSON on stdout), against real kernel objects in throwaway namespaces and
// Debian's host-local for IPAM: every command, every error code the issue
// names, DEL twice, GC against cni.dev/valid-attachments, CHECK noticing a
// removed interface, prevResult chaining, and nothing left behind.
import assert from 'node:assert/strict';
import { execFileSync } from 'node:child_process';
import { existsSync, mkdtempSync, readdirSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, afterEach, before, describe, it } from 'node:test';
import { attachmentId } from '../../src/cni/store.js';
import { dhcpHosts } from '../../src/net/dnsmasq.js';
import { listEndpoints } from '../../src/state/endpoints.js';
import { cni, cniAsync, haveReferencePlugins, type CniCall } from '../lib/cni.js';
import { NetNs } from '../lib/netns.js';
import { BIN } from '../lib/paths.js';

const skip = haveReferencePlugins() ? false : 'needs containernetworking-plugins (host-local): run scripts/setup.sh';

describe('CNI plugin protocol', { skip }, () => {
  let h: NetNs;
  let peer: NetNs;
  let stateDir: string;
  let ipamDir: string;
  let baseline: string[];
  const sandboxes: NetNs[] = [];
  const env = (): Record<string, string> => ({ QEMU_NET_HELPER_STATE_DIR: stateDir });
  const sandbox = (): NetNs => { const s = NetNs.create('qnhcS'); sandboxes.push(s); return s; };
  const conf = (extra: Record<string, unknown> = {}): Record<string, unknown> => ({
    cniVersion: '1.1.0', name: 'qnhtest', type: 'qemu-net-helper', mode: 'bridge', dev: 'br0',
    ipam: { type: 'host-local', subnet: '10.99.0.0/24', rangeStart: '10.99.0.10', gateway: '10.99.0.1', dataDir: ipamDir, routes: [{ dst: '0.0.0.0/0' }] },
    ...extra,
  });
  const call = (command: string, s: NetNs | null, containerId = 'ctr1', ifname = 'eth0'): CniCall =>
    ({ command, containerId, netns: s ? `/run/netns/${s.name}` : '', ifname, extraEnv: env() });
  const leases = (): string[] => (existsSync(join(ipamDir, 'qnhtest')) ? readdirSync(join(ipamDir, 'qnhtest')).filter((f) => /^\d/.test(f)) : []);

  before(() => {
    h = NetNs.create('qnhcH');
    peer = NetNs.create('qnhcP');
    h.addBridge('br0', '10.99.0.1/24');
    h.ip('link', 'add', 'up0', 'type', 'veth', 'peer', 'name', 'wp0', 'netns', peer.name);
    h.ip('link', 'set', 'up0', 'up');
    peer.ip('addr', 'add', '10.98.0.2/24', 'dev', 'wp0');
    peer.ip('link', 'set', 'wp0', 'up');
    stateDir = mkdtempSync(join(tmpdir(), 'qnh-cni-state-'));
    ipamDir = mkdtempSync(join(tmpdir(), 'qnh-cni-ipam-'));
    baseline = h.links().sort();
  });
  after(() => {
    for (const s of sandboxes) s.destroy();
    h?.destroy();
    peer?.destroy();
    for (const d of [stateDir, ipamDir]) if (d) rmSync(d, { recursive: true, force: true });
  });
  afterEach(() => {
    assert.deepEqual(h.links().sort(), baseline, 'no host interface may be left behind');
    assert.deepEqual(listEndpoints(stateDir), [], 'no attachment record may be left behind');
    assert.deepEqual(leases(), [], 'every address is back with host-local');
    assert.equal(h.exec('nft', 'list', 'tables').trim(), '', 'no NAT table may be left behind');
    assert.equal(execFileSync('ip', ['netns', 'pids', h.name], { encoding: 'utf8' }).trim(), '', 'no process (dnsmasq) may be left in the host namespace');
  });

  it('VERSION lists 1.1.0 and the older versions, answering in the version asked', () => {
    const r = cni(h, { command: 'VERSION' }, { cniVersion: '1.0.0' });
    assert.equal(r.status, 0, r.stdout + r.stderr);
    assert.equal(r.json.cniVersion, '1.0.0');
    assert.deepEqual(r.json.supportedVersions, ['0.3.0', '0.3.1', '0.4.0', '1.0.0', '1.1.0']);
  });

  it('error codes: 1 unsupported version, 2 unknown field, 7 invalid field (named), 6 not JSON, 4 missing env, 3 missing netns', () => {
    const s = sandbox();
    const cases: [string, CniCall, unknown, number, RegExp][] = [
      ['version', call('ADD', s), conf({ cniVersion: '9.9.9' }), 1, /incompatible CNI versions/],
      ['unknown field', call('ADD', s), conf({ transprot: 'tap' }), 2, /unsupported field 'transprot'/],
      ['bad mtu', call('ADD', s), conf({ mtu: 'big' }), 7, /field 'mtu'/],
      ['bad mode', call('ADD', s), conf({ mode: 'hub' }), 7, /field 'mode'/],
      ['vlan on veth', call('ADD', s), conf({ vlan: 5 }), 7, /field 'vlan'/],
      ['nat tap without the guest mac', call('ADD', s), conf({ mode: 'nat', transport: 'tap' }), 7, /field 'mac'/],
      ['subnet outside nat', call('ADD', s), conf({ subnet: '10.93.0.0/24' }), 7, /field 'subnet'/],
      ['nat on a bridge not ours', call('ADD', s), conf({ mode: 'nat' }), 7, /'br0' exists and is not a NAT network/],
      ['nat gateway not the bridge', call('ADD', s), conf({ mode: 'nat', dev: 'qnhnat3', ipam: { type: 'host-local', subnet: '10.93.0.0/24', gateway: '10.93.0.9', dataDir: ipamDir } }), 7, /field 'ipam.gateway'/],
      ['GC in 1.0.0', { ...call('GC', null) }, conf({ cniVersion: '1.0.0' }), 1, /GC is not defined in CNI 1.0.0/],
      ['not json', call('ADD', s), '{"cniVersion":', 6, /not JSON/],
      ['no container id', { ...call('ADD', s), containerId: '' }, conf(), 4, /CNI_CONTAINERID is not set/],
      ['bad command', { ...call('ADD', s), command: 'PUT' }, conf(), 4, /CNI_COMMAND 'PUT'/],
      ['missing netns', { ...call('ADD', s), netns: '/run/netns/qnhc-does-not-exist' }, conf(), 3, /does not exist/],
      ['netns not a namespace', { ...call('ADD', s), netns: '/etc/hostname' }, conf(), 4, /is not a network namespace/],
      ['missing dev', call('ADD', s), conf({ dev: 'nosuchbr' }), 105, /dev 'nosuchbr' does not exist/],
    ];
    for (const [what, c, body, code, msg] of cases) {
      const r = cni(h, c, body);
      assert.equal(r.status, 1, `${what}: exit status`);
      assert.equal(r.json?.code, code, `${what}: ${r.stdout} ${r.stderr}`);
      assert.match(r.json.msg, msg, what);
      assert.equal(typeof r.json.cniVersion, 'string', `${what}: error JSON carries cniVersion`);
    }
    assert.deepEqual(s.links(), ['lo'], 'a refused ADD leaves the sandbox as it was');
    assert.equal(h.exec('nft', 'list', 'tables').trim(), '', 'a refused nat ADD removed the NAT network it made');
  });

  it('bridge mode over veth: ADD with host-local, sandbox pings the bridge, CHECK, CHECK notices a removed interface, DEL twice', () => {
    const s = sandbox();
    const c = conf({ mac: '52:54:00:99:00:10', mtu: 1400 });
    const add = cni(h, call('ADD', s), c);
    assert.equal(add.status, 0, add.stdout + add.stderr);
    const r = add.json;
    assert.equal(r.cniVersion, '1.1.0');
    const eth0 = r.interfaces.at(-1);
    assert.deepEqual(eth0, { name: 'eth0', mac: '52:54:00:99:00:10', mtu: 1400, sandbox: `/run/netns/${s.name}` });
    assert.equal(r.interfaces[0].name, 'br0');
    assert.equal(r.ips.length, 1);
    assert.match(r.ips[0].address, /^10\.99\.0\.\d+\/24$/);
    assert.equal(r.ips[0].gateway, '10.99.0.1');
    assert.equal(r.ips[0].interface, r.interfaces.length - 1);
    assert.deepEqual(r.routes, [{ dst: '0.0.0.0/0' }]);
    const hostEnd = h.linkDetails(r.interfaces[1].name) as { master?: string };
    assert.equal(hostEnd.master, 'br0');
    assert.match(s.ip('-4', 'addr', 'show', 'dev', 'eth0'), new RegExp(r.ips[0].address.replace(/\./g, '\\.')));
    assert.match(s.ip('route', 'show', 'default'), /default via 10\.99\.0\.1 dev eth0/);
    s.exec('busybox', 'ping', '-c', '1', '-W', '5', '10.99.0.1');
    assert.equal(leases().length, 1);

    const again = cni(h, call('ADD', s), c);
    assert.equal(again.json?.code, 7, 'a second ADD of the same attachment is refused');
    assert.match(again.json.msg, /already has 'eth0'/);

    const check = cni(h, call('CHECK', s), { ...c, prevResult: r });
    assert.equal(check.status, 0, check.stdout + check.stderr);
    assert.equal(check.stdout, '');

    s.ip('link', 'del', 'eth0');
    const broken = cni(h, call('CHECK', s), { ...c, prevResult: r });
    assert.equal(broken.status, 1);
    assert.equal(broken.json.code, 105);
    assert.match(broken.json.msg, /interface 'eth0' is missing/);

    for (const round of [1, 2]) {
      const del = cni(h, call('DEL', s), { ...c, prevResult: r });
      assert.equal(del.status, 0, `DEL ${round}: ${del.stdout} ${del.stderr}`);
      assert.equal(del.stdout, '');
    }
  });

  it('DEL with the sandbox already gone (or no CNI_NETNS at all) still releases the host side and the address', () => {
    const s = sandbox();
    const add = cni(h, call('ADD', s), conf());
    assert.equal(add.status, 0, add.stdout + add.stderr);
    s.destroy();
    const del = cni(h, { ...call('DEL', null), netns: '' }, conf());
    assert.equal(del.status, 0, del.stdout + del.stderr);
  });

  it('an ADD failing after IPAM gave an address undoes everything, the address included (the setup tier\'s undo)', () => {
    const s = sandbox();
    const add = cni(h, call('ADD', s), conf({ dev: 'qnhnobr0' }));
    assert.notEqual(add.status, 0, 'a missing bridge fails the ADD');
    assert.match(String(add.json?.msg), /qnhnobr0/, add.stdout + add.stderr);
    assert.equal(add.stderr, '', 'everything was undone: no "could not undo" line');
    // afterEach: no record, no host interface, no lease left.
  });

  it('prevResult: our interface and address are appended, indexes shifted, DNS merged', () => {
    const s = sandbox();
    const prevResult = { cniVersion: '1.1.0', interfaces: [{ name: 'dummy0', mac: '02:00:00:00:00:01' }], ips: [{ address: '192.0.2.5/24', interface: 0 }], dns: { nameservers: ['192.0.2.53'] } };
    const c = conf({ prevResult, dns: { nameservers: ['10.99.0.1'], search: ['example.test'] } });
    const add = cni(h, call('ADD', s), c);
    assert.equal(add.status, 0, add.stdout + add.stderr);
    const r = add.json;
    assert.deepEqual(r.interfaces[0], prevResult.interfaces[0]);
    assert.deepEqual(r.ips[0], prevResult.ips[0]);
    assert.equal(r.ips[1].interface, r.interfaces.length - 1);
    assert.equal(r.interfaces[r.ips[1].interface].name, 'eth0');
    assert.deepEqual(r.dns, { nameservers: ['192.0.2.53', '10.99.0.1'], search: ['example.test'] });
    assert.equal(cni(h, call('DEL', s), { ...c, prevResult: r }).status, 0);
  });

  it('older versions: a 0.4.0 config gets a 0.4.0 result (ips[].version, no mtu)', () => {
    const s = sandbox();
    const c = conf({ cniVersion: '0.4.0' });
    const add = cni(h, call('ADD', s), c);
    assert.equal(add.status, 0, add.stdout + add.stderr);
    assert.equal(add.json.cniVersion, '0.4.0');
    assert.equal(add.json.ips[0].version, '4');
    assert.equal(add.json.interfaces.at(-1).mtu, undefined);
    assert.equal(cni(h, call('DEL', s), c).status, 0);
  });

  it('GC releases the attachments missing from cni.dev/valid-attachments, keeps the others', () => {
    const s1 = sandbox();
    const s2 = sandbox();
    const a1 = cni(h, call('ADD', s1, 'ctrA'), conf());
    const a2 = cni(h, call('ADD', s2, 'ctrB'), conf());
    assert.equal(a1.status, 0, a1.stdout);
    assert.equal(a2.status, 0, a2.stdout);
    assert.equal(leases().length, 2);
    const gc = cni(h, { command: 'GC', extraEnv: env() }, conf({ 'cni.dev/valid-attachments': [{ containerID: 'ctrA', ifname: 'eth0' }] }));
    assert.equal(gc.status, 0, gc.stdout + gc.stderr);
    assert.deepEqual(s2.links(), ['lo'], 'the stale attachment is gone from its sandbox');
    assert.ok(s1.links().includes('eth0'), 'the valid one stays');
    assert.equal(leases().length, 1, "the stale attachment's address went back to host-local");
    assert.equal(listEndpoints(stateDir).length, 1);
    assert.equal(cni(h, call('DEL', s1, 'ctrA'), conf()).status, 0);
  });

  it('STATUS: ready with the bridge and host-local present; 50 when dev or the IPAM plugin is missing', () => {
    assert.equal(cni(h, { command: 'STATUS', extraEnv: env() }, conf()).status, 0);
    const noDev = cni(h, { command: 'STATUS', extraEnv: env() }, conf({ dev: 'gone0' }));
    assert.equal(noDev.json?.code, 50, noDev.stdout);
    const noIpam = cni(h, { command: 'STATUS', extraEnv: env(), path: '/nonexistent' }, conf());
    assert.equal(noIpam.json?.code, 50, noIpam.stdout);
    assert.equal(cni(h, { command: 'STATUS', extraEnv: env() }, conf({ mode: 'nat', dev: 'qnhnat5', ipam: undefined })).status, 0, 'nat: nft, dnsmasq and the kernel are there');
    const foreign = cni(h, { command: 'STATUS', extraEnv: env() }, conf({ mode: 'nat' }));
    assert.equal(foreign.json?.code, 50, foreign.stdout);
    assert.match(foreign.json.msg, /'br0' exists and is not a NAT network/);
  });

  it('macvlan vepa on an uplink (container networking like the macvlan plugin): the sandbox reaches a peer on the wire', () => {
    const s = sandbox();
    const c = conf({ mode: 'vepa', dev: 'up0', ipam: { type: 'host-local', subnet: '10.98.0.0/24', rangeStart: '10.98.0.10', dataDir: ipamDir } });
    const add = cni(h, call('ADD', s), c);
    assert.equal(add.status, 0, add.stdout + add.stderr);
    const d = s.linkDetails('eth0') as { linkinfo?: { info_kind?: string; info_data?: { mode?: string } } };
    assert.equal(d.linkinfo?.info_kind, 'macvlan');
    assert.equal(d.linkinfo?.info_data?.mode, 'vepa');
    s.exec('busybox', 'ping', '-c', '1', '-W', '5', '10.98.0.2');
    assert.equal(cni(h, call('CHECK', s), { ...c, prevResult: add.json }).status, 0);
    assert.equal(cni(h, call('DEL', s), c).status, 0);
    assert.deepEqual(s.links(), ['lo']);
  });

  it('tap for a VM in the pod: a tap of the given owner inside the sandbox, bridged to br0; macvtap moved into the sandbox', () => {
    const s = sandbox();
    const c = conf({ transport: 'tap', owner: 4242, group: 4343, mac: '52:54:00:99:00:20' });
    const add = cni(h, call('ADD', s, 'vm1', 'tap0'), c);
    assert.equal(add.status, 0, add.stdout + add.stderr);
    const tap = s.linkDetails('tap0') as { address: string; master?: string; linkinfo?: { info_kind?: string; info_data?: { type?: string; user?: number; group?: number; pi?: boolean; vnet_hdr?: boolean } } };
    assert.equal(tap.linkinfo?.info_kind, 'tun');
    assert.equal(tap.linkinfo?.info_data?.type, 'tap');
    assert.equal(tap.linkinfo?.info_data?.user, 4242);
    assert.equal(tap.linkinfo?.info_data?.group, 4343);
    assert.equal(tap.address, '52:54:00:99:00:20');
    assert.ok(tap.master?.startsWith('qnhb'), 'the tap is a port of the bridge in the sandbox');
    assert.equal(add.json.interfaces.at(-1).name, 'tap0');
    assert.match(add.json.ips[0].address, /^10\.99\.0\./, 'the address is reported for the guest');
    assert.doesNotMatch(s.ip('-4', 'addr'), /10\.99\.0\./, 'the guest owns the address: nothing configured in the sandbox');
    assert.equal(cni(h, call('CHECK', s, 'vm1', 'tap0'), { ...c, prevResult: add.json }).status, 0);
    assert.equal(cni(h, call('DEL', s, 'vm1', 'tap0'), c).status, 0);
    assert.deepEqual(s.links(), ['lo']);

    // Without dev: the tap alone, for a chained plugin (or the VM launcher) to wire.
    const alone = conf({ transport: 'tap', dev: undefined, ipam: undefined });
    const aadd = cni(h, call('ADD', s, 'vm3', 'tap1'), alone);
    assert.equal(aadd.status, 0, aadd.stdout + aadd.stderr);
    assert.deepEqual(s.links().sort(), ['lo', 'tap1']);
    assert.deepEqual(aadd.json.interfaces, [{ name: 'tap1', mac: (s.linkDetails('tap1') as { address: string }).address, mtu: 1500, sandbox: `/run/netns/${s.name}` }]);
    assert.equal(cni(h, call('DEL', s, 'vm3', 'tap1'), alone).status, 0);
    assert.deepEqual(s.links(), ['lo']);

    const m = conf({ transport: 'macvtap', mode: 'vepa', dev: 'up0', ipam: undefined });
    const madd = cni(h, call('ADD', s, 'vm2', 'net1'), m);
    assert.equal(madd.status, 0, madd.stdout + madd.stderr);
    const md = s.linkDetails('net1') as { linkinfo?: { info_kind?: string; info_data?: { mode?: string } } };
    assert.equal(md.linkinfo?.info_kind, 'macvtap');
    assert.equal(md.linkinfo?.info_data?.mode, 'vepa');
    assert.equal(cni(h, call('DEL', s, 'vm2', 'net1'), m).status, 0);
    assert.deepEqual(s.links(), ['lo']);
  });
  it('route mode: the container is routed through the uplink with proxy ARP, reaches the peer; DEL puts the uplink back', () => {
    const s = sandbox();
    h.ip('addr', 'add', '10.98.0.1/24', 'dev', 'up0');
    const sysctl = (k: string): string => h.exec('cat', `/proc/sys/net/ipv4/conf/up0/${k}`).trim();
    const before = [sysctl('proxy_arp'), sysctl('forwarding')];
    try {
      const c = conf({ mode: 'route', dev: 'up0', ipam: { type: 'host-local', subnet: '10.98.0.0/24', rangeStart: '10.98.0.50', gateway: '10.98.0.1', dataDir: ipamDir, routes: [{ dst: '0.0.0.0/0' }] } });
      const add = cni(h, call('ADD', s), c);
      assert.equal(add.status, 0, add.stdout + add.stderr);
      const addr = String(add.json.ips[0].address).split('/')[0];
      assert.match(h.ip('route', 'show', `${addr}/32`), /proto 213/);
      assert.deepEqual([sysctl('proxy_arp'), sysctl('forwarding')], ['1', '1']);
      s.exec('busybox', 'ping', '-c', '1', '-W', '5', '10.98.0.2');
      peer.exec('busybox', 'ping', '-c', '1', '-W', '5', addr!);
      assert.equal(cni(h, call('CHECK', s), { ...c, prevResult: add.json }).status, 0);
      assert.equal(cni(h, call('DEL', s), c).status, 0);
      assert.equal(h.ip('route', 'show', `${addr}/32`).trim(), '');
      assert.deepEqual([sysctl('proxy_arp'), sysctl('forwarding')], before, "the uplink's settings are back");
      assert.deepEqual(s.links(), ['lo']);
    } finally {
      h.ip('addr', 'del', '10.98.0.1/24', 'dev', 'up0');
    }
  });

  it('nat mode over veth: containers behind the NAT bridge reach the outside only by masquerade; IPAM or the network\'s own address; the helper\'s list/down/gc see them; GC and the last DEL remove the network', () => {
    const BR = 'qnhnat1';
    const natDir = join(stateDir, 'nat', BR);
    const helper = (...args: string[]): any => JSON.parse(h.exec('env', `QEMU_NET_HELPER_STATE_DIR=${stateDir}`, process.execPath, BIN, ...args, '--json'));
    // The outside: the peer at 10.98.0.2 beyond up0 has no route to the NAT subnet, so only a masqueraded request is answered.
    h.ip('addr', 'add', '10.98.0.1/24', 'dev', 'up0');
    try {
      assert.doesNotMatch(peer.ip('route'), /10\.93\.|default/);
      const s1 = sandbox();
      const s2 = sandbox();
      const c1 = conf({ mode: 'nat', dev: BR, dns: { nameservers: ['192.0.2.53'] }, ipam: { type: 'host-local', subnet: '10.93.0.0/24', rangeStart: '10.93.0.100', dataDir: ipamDir } });
      const a1 = cni(h, call('ADD', s1, 'nat1'), c1);
      assert.equal(a1.status, 0, a1.stdout + a1.stderr);
      const r1 = a1.json;
      assert.deepEqual(r1.interfaces.map((i: { name: string }) => i.name).filter((n: string) => n !== r1.interfaces[1].name), [BR, 'eth0']);
      assert.deepEqual(r1.interfaces[2], { name: 'eth0', mac: r1.interfaces[2].mac, mtu: 1500, sandbox: `/run/netns/${s1.name}` });
      assert.match(r1.ips[0].address, /^10\.93\.0\.1\d\d\/24$/, "host-local's address, from its range");
      assert.equal(r1.ips[0].gateway, '10.93.0.1', "the NAT bridge's address is the gateway");
      assert.equal(r1.ips[0].interface, 2);
      assert.deepEqual(r1.routes, [{ dst: '0.0.0.0/0', gw: '10.93.0.1' }]);
      assert.deepEqual(r1.dns, { nameservers: ['192.0.2.53'] });
      assert.equal((h.linkDetails(r1.interfaces[1].name) as { master?: string }).master, BR);
      assert.match(h.exec('nft', 'list', 'tables'), new RegExp(`table ip qemu_net_helper_${BR}`));
      assert.match(s1.ip('route', 'show', 'default'), /default via 10\.93\.0\.1 dev eth0/);
      s1.exec('busybox', 'ping', '-c', '1', '-W', '5', '10.98.0.2');

      // Another network on the same NAT bridge, without IPAM: an address of the NAT network's own.
      const c2 = { cniVersion: '1.1.0', name: 'qnhnat', type: 'qemu-net-helper', mode: 'nat', dev: BR };
      const a2 = cni(h, call('ADD', s2, 'nat2'), c2);
      assert.equal(a2.status, 0, a2.stdout + a2.stderr);
      const addr1 = String(r1.ips[0].address).split('/')[0]!;
      const addr2 = String(a2.json.ips[0].address).split('/')[0]!;
      assert.match(a2.json.ips[0].address, /^10\.93\.0\.\d+\/24$/);
      assert.notEqual(addr2, addr1);
      assert.deepEqual(a2.json.routes, [{ dst: '0.0.0.0/0', gw: '10.93.0.1' }]);
      s2.exec('busybox', 'ping', '-c', '1', '-W', '5', '10.98.0.2');
      s2.exec('busybox', 'ping', '-c', '1', '-W', '5', addr1);
      // Both addresses are reserved for their MACs in the network's DHCP: no VM on it is leased them.
      const hosts = dhcpHosts(natDir);
      assert.equal(hosts.get(r1.interfaces[2].mac), addr1);
      assert.equal(hosts.get(a2.json.interfaces[2].mac), addr2);
      assert.equal(cni(h, call('CHECK', s1, 'nat1'), { ...c1, prevResult: r1 }).status, 0);
      assert.equal(cni(h, call('CHECK', s2, 'nat2'), { ...c2, prevResult: a2.json }).status, 0);

      // One truth: the helper lists both, its gc keeps them (their owner is the runtime), its down removes one.
      const id2 = attachmentId('qnhnat', 'nat2', 'eth0');
      const listed = helper('list').endpoints.filter((e: { kernel: string }) => e.kernel === 'nat').map((e: { id: string }) => e.id).sort();
      assert.deepEqual(listed, [attachmentId('qnhtest', 'nat1', 'eth0'), id2].sort());
      helper('gc');
      assert.equal(listEndpoints(stateDir).length, 2, "the helper's gc leaves CNI attachments alone");
      helper('down', id2);
      assert.deepEqual(s2.links(), ['lo']);
      assert.equal(dhcpHosts(natDir).has(a2.json.interfaces[2].mac), false, 'its reservation went with it');
      for (const round of [1, 2]) assert.equal(cni(h, call('DEL', s2, 'nat2'), c2).status, 0, `DEL ${round} after down`);
      assert.ok(h.links().includes(BR), 'the network stays while a container is on it');
      s1.exec('busybox', 'ping', '-c', '1', '-W', '5', '10.98.0.2');

      // GC of the network's last attachment (no valid attachments) takes the network with it.
      const gc = cni(h, { command: 'GC', extraEnv: env() }, conf({ ...c1, 'cni.dev/valid-attachments': [] }));
      assert.equal(gc.status, 0, gc.stdout + gc.stderr);
      assert.deepEqual(s1.links(), ['lo']);
      assert.ok(!h.links().includes(BR), 'the last user removed the NAT bridge');
      for (const round of [1, 2]) assert.equal(cni(h, call('DEL', s1, 'nat1'), c1).status, 0, `DEL ${round} after GC`);
    } finally {
      h.ip('addr', 'del', '10.98.0.1/24', 'dev', 'up0');
    }
  });

  it('nat mode over tap: the pod\'s tap is bridged onto the NAT bridge and the guest\'s MAC is leased the reported address by DHCP', () => {
    const s = sandbox();
    const g = sandbox(); // plays the guest behind the tap: a DHCP client on the pod's bridge
    const guestMac = '52:54:00:93:00:07';
    const c = conf({ mode: 'nat', transport: 'tap', dev: 'qnhnat2', subnet: '10.92.0.0/24', mac: guestMac, ipam: undefined });
    const add = cni(h, call('ADD', s, 'vmnat', 'tap0'), c);
    assert.equal(add.status, 0, add.stdout + add.stderr);
    const r = add.json;
    const tap = s.linkDetails('tap0') as { address: string; master?: string; linkinfo?: { info_kind?: string } };
    assert.equal(tap.linkinfo?.info_kind, 'tun');
    assert.notEqual(tap.address, guestMac, "the tap keeps its own MAC: a bridge port holding the guest's would swallow its frames");
    assert.ok(tap.master?.startsWith('qnhb'));
    assert.equal(r.interfaces.at(-1).name, 'tap0');
    assert.match(r.ips[0].address, /^10\.92\.0\.\d+\/24$/);
    assert.equal(r.ips[0].gateway, '10.92.0.1');
    assert.deepEqual(r.routes, [{ dst: '0.0.0.0/0', gw: '10.92.0.1' }]);
    assert.doesNotMatch(s.ip('-4', 'addr'), /10\.92\.0\./, 'the guest owns the address');
    s.ip('link', 'add', 'gst0', 'type', 'veth', 'peer', 'name', 'gst1', 'netns', g.name);
    s.ip('link', 'set', 'gst0', 'master', tap.master!, 'up');
    g.ip('link', 'set', 'gst1', 'address', guestMac, 'up');
    const leased = g.exec('sh', '-c', 'busybox udhcpc -i gst1 -n -q -f -t 5 -T 2 -s /bin/true 2>&1');
    assert.match(leased, new RegExp(`lease of ${String(r.ips[0].address).split('/')[0]!.replace(/\./g, '\\.')} obtained`), leased);
    s.ip('link', 'del', 'gst0');
    assert.equal(cni(h, call('CHECK', s, 'vmnat', 'tap0'), { ...c, prevResult: r }).status, 0);
    for (const round of [1, 2]) assert.equal(cni(h, call('DEL', s, 'vmnat', 'tap0'), c).status, 0, `DEL ${round}`);
    assert.deepEqual(s.links(), ['lo']);
  });

  it('six ADDs at once on one bridge (and on one NAT network, which the first creates) get six addresses and links; six DELs at once remove them all', async () => {
    const nat = conf({ mode: 'nat', dev: 'qnhnat7', ipam: undefined });
    for (const [what, c] of [['bridge', conf()], ['nat', nat]] as const) {
      const boxes = Array.from({ length: 6 }, () => sandbox());
      const adds = await Promise.all(boxes.map((s, k) => cniAsync(h, call('ADD', s, `par${k}`), c)));
      for (const a of adds) assert.equal(a.status, 0, `${what}: ${a.stdout} ${a.stderr}`);
      const addrs = new Set(adds.map((a) => a.json.ips[0].address));
      assert.equal(addrs.size, 6, `${what}: distinct addresses`);
      if (what === 'bridge') assert.equal(leases().length, 6);
      assert.equal(listEndpoints(stateDir).length, 6);
      const dels = await Promise.all(boxes.map((s, k) => cniAsync(h, call('DEL', s, `par${k}`), c)));
      for (const d of dels) assert.equal(d.status, 0, `${what}: ${d.stdout} ${d.stderr}`);
      for (const s of boxes) assert.deepEqual(s.links(), ['lo']);
    }
  });

  it('crash safety: ADD SIGKILLed after each setup step, then the runtime\'s DEL, leaves nothing (macvlan; tap, which includes the bridge veth; nat)', () => {
    const confs: [string, Record<string, unknown>][] = [
      ['macvlan', conf({ mode: 'private', dev: 'up0', ipam: { type: 'host-local', subnet: '10.98.0.0/24', rangeStart: '10.98.0.10', dataDir: ipamDir } })],
      ['tap', conf({ transport: 'tap' })],
      ['nat', conf({ mode: 'nat', dev: 'qnhnat4', ipam: { type: 'host-local', subnet: '10.93.0.0/24', dataDir: ipamDir } })],
    ];
    for (const [what, c] of confs) {
      for (let step = 1; ; step++) {
        assert.ok(step < 12, `${what}: ADD should finish within 11 steps`);
        const s = sandbox();
        const add = cni(h, { ...call('ADD', s, `crash${step}`), extraEnv: { ...env(), QEMU_NET_HELPER_FAULT_AFTER_STEP: String(step) } }, c);
        const finished = add.status === 0;
        assert.ok(finished || add.status === null, `${what} step ${step}: killed or done, got ${add.status} ${add.stdout}`);
        const del = cni(h, call('DEL', s, `crash${step}`), c);
        assert.equal(del.status, 0, `${what} step ${step}: DEL ${del.stdout}`);
        assert.deepEqual(s.links(), ['lo'], `${what} step ${step}: sandbox empty after DEL`);
        assert.deepEqual(h.links().sort(), baseline, `${what} step ${step}: host links as before`);
        assert.equal(h.exec('nft', 'list', 'tables').trim(), '', `${what} step ${step}: no NAT table left`);
        s.destroy();
        if (finished) break;
      }
    }
  });
});
