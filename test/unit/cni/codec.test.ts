// The CNI plugin's pure parts: config validation (error codes and the field
// named), version negotiation, reading results of every version, chaining,
// and writing a result down to older versions.
import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import { parseConfig } from '../../../src/cni/config.js';
import { CniError } from '../../../src/cni/errors.js';
import { chain, readResult, writeResult } from '../../../src/cni/result.js';
import { compareVersions, definesCommand, negotiate, requireCommandIn, requireSupported } from '../../../src/cni/version.js';
import { readEnv } from '../../../src/cni/env.js';

const base = { cniVersion: '1.1.0', name: 'n1', type: 'qemu-net-helper', dev: 'br0' };
const codeOf = (fn: () => unknown): { code: number; msg: string } => {
  try { fn(); } catch (e) { assert.ok(e instanceof CniError, String(e)); return { code: e.code, msg: e.message }; }
  assert.fail('did not throw');
};

describe('CNI config', () => {
  it('defaults: mode bridge, transport veth', () => {
    const c = parseConfig(JSON.stringify(base));
    assert.equal(c.mode, 'bridge');
    assert.equal(c.transport, 'veth');
  });
  it('unknown keys are code 2 and named; wrong values code 7 naming the field path', () => {
    assert.deepEqual(codeOf(() => parseConfig(JSON.stringify({ ...base, vlna: 3 }))).code, 2);
    assert.match(codeOf(() => parseConfig(JSON.stringify({ ...base, vlna: 3 }))).msg, /'vlna'/);
    const bad: [Record<string, unknown>, RegExp][] = [
      [{ mtu: 20 }, /field 'mtu'/],
      [{ mac: '52:54:00' }, /field 'mac'/],
      [{ dev: 'a/b' }, /field 'dev'/],
      [{ type: 'bridge' }, /field 'type'/],
      [{ transport: 'vf', dev: undefined }, /field 'vfPool'/],
      [{ transport: 'vf', mode: 'bridge' }, /field 'mode'/],
      [{ transport: 'macvtap', mode: 'nat' }, /field 'mode'/],
      [{ transport: 'tap', mode: 'nat' }, /field 'mac'/],
      [{ subnet: '10.93.0.0/24' }, /field 'subnet'/],
      [{ mode: 'nat', subnet: '10.93.0/24' }, /field 'subnet'/],
      [{ owner: 5 }, /field 'owner'/],
      [{ ipam: { type: '../x' } }, /field 'ipam.type'/],
      [{ 'cni.dev/valid-attachments': [{ ifname: 'eth0' }] }, /field 'cni.dev\/valid-attachments.0.containerID'/],
      [{ name: '-x' }, /field 'name'/],
    ];
    for (const [extra, re] of bad) {
      const e = codeOf(() => parseConfig(JSON.stringify({ ...base, ...extra })));
      assert.equal(e.code, 7, JSON.stringify(extra));
      assert.match(e.msg, re);
    }
  });
  it('mode nat: dev is the NAT bridge and may be left out; over tap the guest MAC may come from runtimeConfig', () => {
    const { dev: _d, ...noDev } = base;
    assert.equal(parseConfig(JSON.stringify({ ...noDev, mode: 'nat', subnet: '10.93.0.0/24' })).subnet, '10.93.0.0/24');
    assert.equal(parseConfig(JSON.stringify({ ...base, mode: 'nat', transport: 'tap', runtimeConfig: { mac: '52:54:00:93:00:01' } })).transport, 'tap');
  });
  it('not JSON or not an object is code 6', () => {
    assert.equal(codeOf(() => parseConfig('{')).code, 6);
    assert.equal(codeOf(() => parseConfig('[1]')).code, 6);
  });
});

describe('CNI versions', () => {
  it('refuses unknown versions with code 1, and commands newer than the config', () => {
    assert.equal(codeOf(() => requireSupported('2.0.0')).code, 1);
    assert.equal(codeOf(() => requireCommandIn('STATUS', '1.0.0')).code, 1);
    assert.equal(codeOf(() => requireCommandIn('CHECK', '0.3.1')).code, 1);
    requireCommandIn('GC', '1.1.0');
  });
  it('GC and STATUS exist for a delegate only from 1.1.0 on', () => {
    assert.equal(definesCommand('GC', '1.0.0'), false);
    assert.equal(definesCommand('STATUS', '1.0.0'), false);
    assert.equal(definesCommand('GC', '1.1.0'), true);
    assert.equal(definesCommand('DEL', '0.3.1'), true);
  });
  it('negotiates the newest common version not above ours (host-local 1.1.1 stops at 1.0.0)', () => {
    const hostLocal = ['0.1.0', '0.2.0', '0.3.0', '0.3.1', '0.4.0', '1.0.0'];
    assert.equal(negotiate('1.1.0', hostLocal), '1.0.0');
    assert.equal(negotiate('0.4.0', hostLocal), '0.4.0');
    assert.equal(negotiate('1.1.0', ['0.1.0']), null);
  });

  it('orders versions as semver does: numerically per part, short ones as x.y.0, garbage lowest', () => {
    assert.ok(compareVersions('1.10.0', '1.9.0') > 0, 'not as strings');
    assert.ok(compareVersions('0.3.1', '0.4.0') < 0);
    assert.equal(compareVersions('0.4', '0.4.0'), 0);
    assert.ok(compareVersions('not-a-version', '0.1.0') < 0);
    assert.equal(negotiate('1.1.0', ['1.0.0', '0.10.0', '0.9.0']), '1.0.0');
  });
});

describe('CNI env', () => {
  it('needs container id, ifname and netns for ADD; DEL may come without netns; GC needs none', () => {
    const env = { CNI_COMMAND: 'ADD', CNI_CONTAINERID: 'c1', CNI_IFNAME: 'eth0', CNI_NETNS: '/run/netns/x', CNI_PATH: '/a:/b', CNI_ARGS: 'K8S_POD_NAME=p;IgnoreUnknown=1' };
    const e = readEnv(env);
    assert.deepEqual(e.path, ['/a', '/b']);
    assert.equal(e.args.K8S_POD_NAME, 'p');
    assert.equal(codeOf(() => readEnv({ ...env, CNI_NETNS: '' })).code, 4);
    assert.equal(readEnv({ ...env, CNI_COMMAND: 'DEL', CNI_NETNS: '' }).netns, '');
    assert.equal(readEnv({ CNI_COMMAND: 'GC' }).command, 'GC');
    assert.equal(codeOf(() => readEnv({ ...env, CNI_IFNAME: 'a-very-long-ifname' })).code, 4);
    assert.equal(codeOf(() => readEnv({ ...env, CNI_CONTAINERID: '-bad' })).code, 4);
  });
});

describe('CNI results', () => {
  const v04 = { cniVersion: '0.4.0', interfaces: [{ name: 'eth0', mac: '02:00:00:00:00:01', sandbox: '/run/netns/a' }], ips: [{ version: '4', address: '10.0.0.2/24', gateway: '10.0.0.1', interface: 0 }], routes: [{ dst: '0.0.0.0/0' }], dns: { nameservers: ['10.0.0.1'] } };
  it('reads a 0.4.0 result (drops ips[].version) and writes it back as 0.4.0 and 1.1.0', () => {
    const r = readResult(v04, 'test');
    assert.deepEqual(r.ips, [{ address: '10.0.0.2/24', gateway: '10.0.0.1', interface: 0 }]);
    assert.deepEqual(writeResult(r, '0.4.0'), { ...v04 });
    const w11 = writeResult(r, '1.1.0') as { ips: unknown[] };
    assert.deepEqual(w11.ips, [{ address: '10.0.0.2/24', gateway: '10.0.0.1', interface: 0 }]);
  });
  it('drops 1.1-only fields (socketPath, pciID, mtu, route extras) when writing 1.0.0', () => {
    const r = readResult({ cniVersion: '1.1.0', interfaces: [{ name: 'net1', pciID: '0000:03:10.1', mtu: 9000, socketPath: '/run/x.sock' }], ips: [], routes: [{ dst: '10.1.0.0/16', table: 5, mtu: 1400 }] }, 't');
    assert.deepEqual(writeResult(r, '1.0.0'), { cniVersion: '1.0.0', interfaces: [{ name: 'net1' }], ips: [], routes: [{ dst: '10.1.0.0/16' }] });
    assert.deepEqual((writeResult(r, '1.1.0') as { interfaces: unknown[] }).interfaces, [{ name: 'net1', mtu: 9000, socketPath: '/run/x.sock', pciID: '0000:03:10.1' }]);
  });
  it('chains: previous first, our ips point at our interfaces, dns merged without duplicates', () => {
    const prev = readResult(v04, 'prev');
    const ours = readResult({ cniVersion: '1.1.0', interfaces: [{ name: 'br0' }, { name: 'net1', sandbox: '/run/netns/a' }], ips: [{ address: '10.9.0.5/24', interface: 1 }], dns: { nameservers: ['10.0.0.1', '10.9.0.1'] } }, 'ours');
    const c = chain(prev, ours);
    assert.deepEqual(c.interfaces.map((i) => i.name), ['eth0', 'br0', 'net1']);
    assert.deepEqual(c.ips.map((i) => i.interface), [0, 2]);
    assert.deepEqual(c.dns.nameservers, ['10.0.0.1', '10.9.0.1']);
  });
  it('refuses hostile shapes with code 6', () => {
    assert.equal(codeOf(() => readResult([], 'x')).code, 6);
    assert.equal(codeOf(() => readResult({ interfaces: [{ mac: 'x' }] }, 'x')).code, 6);
    assert.equal(codeOf(() => readResult({ ips: [{ gateway: '1.1.1.1' }] }, 'x')).code, 6);
  });
});
