// The same configurations through Debian's reference plugins
// (containernetworking-plugins 1.1.1: bridge, macvlan; it has no tap plugin)
// and through ours, in the same namespaces with the same host-local range:
// the results must agree in shape (interfaces, addresses, routes), and the
// sandboxes must come out alike. Prints the comparison table kept in README.
// For nat, the reference is the bridge plugin making its own bridge as the
// gateway with ipMasq: both must reach a peer that has no route back.
import assert from 'node:assert/strict';
import { existsSync, mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, before, describe, it } from 'node:test';
import { cni, DEBIAN_CNI_DIR, haveReferencePlugins } from '../lib/cni.js';
import { NetNs } from '../lib/netns.js';

const skip = haveReferencePlugins() && existsSync(`${DEBIAN_CNI_DIR}/bridge`) ? false : 'needs containernetworking-plugins';

/** The bridge each side makes for the masqueraded network. */
const NAT_BRIDGE = 'qnhnat9';
const REF_BRIDGE = 'cnibr9';

interface Shape { interfaces: string; sandboxIf: string; ips: string; routes: string; kind: string; sandboxRoutes: string }

describe('our plugin against the reference plugins', { skip }, () => {
  let h: NetNs;
  let peer: NetNs;
  let stateDir: string;
  let ipamDir: string;
  const sandboxes: NetNs[] = [];
  const rows: string[] = [];

  before(() => {
    h = NetNs.create('qnhcrH');
    peer = NetNs.create('qnhcrP');
    h.addBridge('br0', '10.95.0.1/24');
    h.ip('link', 'add', 'up0', 'type', 'veth', 'peer', 'name', 'wp0', 'netns', peer.name);
    h.ip('link', 'set', 'up0', 'up');
    peer.ip('addr', 'add', '10.94.0.2/24', 'dev', 'wp0');
    peer.ip('link', 'set', 'wp0', 'up');
    stateDir = mkdtempSync(join(tmpdir(), 'qnh-cniref-state-'));
    ipamDir = mkdtempSync(join(tmpdir(), 'qnh-cniref-ipam-'));
  });
  after(() => {
    if (rows.length) console.log(['| config | plugin | result interfaces (* in sandbox) | sandbox link | result ips | result routes | container routing table |', '|---|---|---|---|---|---|---|', ...rows].join('\n'));
    for (const s of sandboxes) s.destroy();
    h?.destroy();
    peer?.destroy();
    for (const d of [stateDir, ipamDir]) if (d) rmSync(d, { recursive: true, force: true });
  });

  /** ADD through `plugin`, the result described without the random parts (names, MACs), then DEL. */
  function run(label: string, plugin: 'ours' | string, conf: Record<string, unknown>, ping: string): Shape {
    const s = NetNs.create('qnhcrS');
    sandboxes.push(s);
    const id = label.replace(/\W+/g, '-');
    const body = { cniVersion: '1.0.0', name: `ref-${id}`, ...conf };
    const call = {
      command: 'ADD', containerId: `c-${id}-${plugin}`, netns: `/run/netns/${s.name}`, ifname: 'eth0',
      extraEnv: { QEMU_NET_HELPER_STATE_DIR: stateDir }, ...(plugin === 'ours' ? {} : { plugin: join(DEBIAN_CNI_DIR, plugin) }),
    };
    const add = cni(h, call, body);
    assert.equal(add.status, 0, `${plugin} ADD: ${add.stdout} ${add.stderr}`);
    const r = add.json;
    s.exec('busybox', 'ping', '-c', '1', '-W', '5', ping);
    const link = s.linkDetails('eth0') as { linkinfo?: { info_kind?: string; info_data?: { mode?: string } }; mtu: number };
    const shape: Shape = {
      interfaces: r.interfaces.map((i: any) => `${i.sandbox ? '*' : ''}${i.name === 'eth0' || i.name === 'br0' || i.name === 'up0' ? i.name : i.name === NAT_BRIDGE || i.name === REF_BRIDGE ? 'new bridge' : 'host veth'}${i.mac ? '' : ' (no mac)'}`).join(', '),
      sandboxIf: `${link.linkinfo?.info_kind}${link.linkinfo?.info_data?.mode ? ` ${link.linkinfo.info_data.mode}` : ''}, mtu ${link.mtu}`,
      ips: r.ips.map((i: any) => `${i.address.replace(/\.\d+\//, '.x/')}${i.gateway ? ` gw ${i.gateway}` : ''} -> ${r.interfaces[i.interface]?.name}`).join(', '),
      routes: (r.routes ?? []).map((x: any) => `${x.dst}${x.gw ? ` via ${x.gw}` : ''}`).join(', ') || '(none)',
      kind: link.linkinfo?.info_kind ?? '',
      // The container's own routing table, its address masked.
      sandboxRoutes: s.ip('-4', 'route').trim().split('\n').map((l) => l.replace(/ src \S+/, '').replace(/\s+$/, '')).join('; '),
    };
    rows.push(`| ${label} | ${plugin === 'ours' ? 'qemu-net-helper' : `${plugin} (Debian 1.1.1)`} | ${shape.interfaces} | ${shape.sandboxIf} | ${shape.ips} | ${shape.routes} | ${shape.sandboxRoutes} |`);
    const del = cni(h, { ...call, command: 'DEL' }, body);
    assert.equal(del.status, 0, `${plugin} DEL: ${del.stdout}`);
    assert.deepEqual(s.links(), ['lo'], `${plugin} DEL empties the sandbox`);
    return shape;
  }

  it('bridge: a veth on br0 with a host-local address and default route', () => {
    const ipam = { type: 'host-local', subnet: '10.95.0.0/24', gateway: '10.95.0.1', dataDir: ipamDir, routes: [{ dst: '0.0.0.0/0' }] };
    const ref = run('bridge', 'bridge', { type: 'bridge', bridge: 'br0', ipam }, '10.95.0.1');
    const our = run('bridge', 'ours', { type: 'qemu-net-helper', mode: 'bridge', dev: 'br0', ipam }, '10.95.0.1');
    assert.deepEqual(our, ref);
  });

  it('macvlan vepa on an uplink, host-local address', () => {
    const ipam = { type: 'host-local', subnet: '10.94.0.0/24', rangeStart: '10.94.0.10', dataDir: ipamDir };
    const ref = run('macvlan vepa', 'macvlan', { type: 'macvlan', master: 'up0', mode: 'vepa', ipam }, '10.94.0.2');
    const our = run('macvlan vepa', 'ours', { type: 'qemu-net-helper', mode: 'vepa', dev: 'up0', ipam }, '10.94.0.2');
    assert.deepEqual(our, ref);
  });

  it('nat: our nat mode against the bridge plugin as gateway with ipMasq; both reach a peer with no route back', () => {
    h.ip('addr', 'add', '10.94.0.1/24', 'dev', 'up0');
    try {
      const ipam = { type: 'host-local', subnet: '10.93.0.0/24', dataDir: ipamDir, routes: [{ dst: '0.0.0.0/0' }] };
      const ref = run('nat', 'bridge', { type: 'bridge', bridge: REF_BRIDGE, isGateway: true, ipMasq: true, ipam }, '10.94.0.2');
      h.ip('link', 'del', REF_BRIDGE); // the reference plugin leaves its bridge; ours must not find the subnet in use
      const our = run('nat', 'ours', { type: 'qemu-net-helper', mode: 'nat', dev: NAT_BRIDGE, ipam }, '10.94.0.2');
      assert.equal(our.interfaces, ref.interfaces);
      assert.equal(our.ips, ref.ips);
      assert.equal(our.sandboxRoutes, ref.sandboxRoutes);
      assert.ok(!h.links().includes(NAT_BRIDGE), 'our DEL removed the NAT network');
    } finally {
      h.ip('addr', 'del', '10.94.0.1/24', 'dev', 'up0');
    }
  });
});
