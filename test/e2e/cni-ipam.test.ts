// CNI GC and STATUS and the IPAM delegate (CNI 1.1: a plugin passes both on
// to its IPAM plugin), against real host-local binaries: Debian's 1.1.1,
// which speaks up to CNI 1.0.0 and answers GC and STATUS with code 3, so it
// must not be sent them; and, when QNH_CNI_HOST_LOCAL_11 names one, an
// upstream host-local that speaks 1.1 (v1.5 or later, not packaged by
// Debian 12), whose GC answers 0 but frees nothing, so our own IPAM DEL of
// each collected attachment must stay.
import assert from 'node:assert/strict';
import { existsSync, mkdtempSync, readdirSync, readFileSync, rmSync, symlinkSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, afterEach, before, describe, it } from 'node:test';
import { listEndpoints } from '../../src/state/endpoints.js';
import { cni, DEBIAN_CNI_DIR, haveReferencePlugins, type CniCall } from '../lib/cni.js';
import { NetNs } from '../lib/netns.js';

const skip = haveReferencePlugins() ? false : 'needs containernetworking-plugins (host-local): run scripts/setup.sh';
const HOST_LOCAL_11 = process.env.QNH_CNI_HOST_LOCAL_11;

describe('CNI GC and STATUS with the IPAM plugin', { skip }, () => {
  let h: NetNs;
  let stateDir: string;
  let ipamDir: string;
  let newerDir: string;
  const sandboxes: NetNs[] = [];
  const env = (): Record<string, string> => ({ QEMU_NET_HELPER_STATE_DIR: stateDir });
  const sandbox = (): NetNs => { const s = NetNs.create('qnhiS'); sandboxes.push(s); return s; };
  const conf = (extra: Record<string, unknown> = {}): Record<string, unknown> => ({
    cniVersion: '1.1.0', name: 'qnhipam', type: 'qemu-net-helper', mode: 'bridge', dev: 'br0',
    ipam: { type: 'host-local', subnet: '10.91.0.0/24', dataDir: ipamDir }, ...extra,
  });
  const add = (s: NetNs, id: string, path?: string): void => {
    const c: CniCall = { command: 'ADD', containerId: id, netns: `/run/netns/${s.name}`, ifname: 'eth0', extraEnv: env(), ...(path ? { path } : {}) };
    const r = cni(h, c, conf());
    assert.equal(r.status, 0, r.stdout + r.stderr);
  };
  const leases = (): string[] => (existsSync(join(ipamDir, 'qnhipam')) ? readdirSync(join(ipamDir, 'qnhipam')).filter((f) => /^\d/.test(f)) : []);

  before(() => {
    h = NetNs.create('qnhiH');
    h.addBridge('br0', '10.91.0.1/24');
    stateDir = mkdtempSync(join(tmpdir(), 'qnh-cni-state-'));
    ipamDir = mkdtempSync(join(tmpdir(), 'qnh-cni-ipam-'));
    // A CNI_PATH whose host-local is the newer one.
    newerDir = mkdtempSync(join(tmpdir(), 'qnh-cni-bin-'));
    if (HOST_LOCAL_11) symlinkSync(HOST_LOCAL_11, join(newerDir, 'host-local'));
  });
  after(() => {
    for (const s of sandboxes) s.destroy();
    h?.destroy();
    for (const d of [stateDir, ipamDir, newerDir]) if (d) rmSync(d, { recursive: true, force: true });
  });
  afterEach(() => {
    assert.deepEqual(h.links().sort(), ['br0', 'lo']);
    assert.deepEqual(listEndpoints(stateDir), []);
    assert.deepEqual(leases(), []);
  });

  it("Debian's host-local (CNI up to 1.0.0) is not sent GC or STATUS, which it answers with code 3; GC gives the addresses back by DEL", () => {
    const hostLocal = join(DEBIAN_CNI_DIR, 'host-local');
    const version = cni(h, { command: 'VERSION', plugin: hostLocal }, { cniVersion: '1.0.0' });
    assert.equal(version.status, 0, version.stdout);
    assert.ok(!version.json.supportedVersions.includes('1.1.0'), `host-local now speaks ${version.json.supportedVersions}: the newer case applies`);
    for (const command of ['GC', 'STATUS']) {
      const direct = cni(h, { command, plugin: hostLocal }, { ...conf({ cniVersion: '1.0.0' }), 'cni.dev/valid-attachments': [] });
      assert.equal(direct.json?.code, 3, `host-local ${command}: ${direct.stdout}`);
    }
    const s = sandbox();
    add(s, 'old1');
    assert.equal(leases().length, 1);
    assert.equal(cni(h, { command: 'STATUS', extraEnv: env() }, conf()).status, 0);
    const gc = cni(h, { command: 'GC', extraEnv: env() }, conf({ 'cni.dev/valid-attachments': [] }));
    assert.equal(gc.status, 0, gc.stdout + gc.stderr);
    assert.deepEqual(leases(), [], "the collected attachment's address went back to host-local");
    assert.deepEqual(s.links(), ['lo']);
  });

  it('GC with the IPAM plugin missing still releases our attachments, then reports the IPAM error', () => {
    const s = sandbox();
    add(s, 'lost1');
    const gc = cni(h, { command: 'GC', extraEnv: env(), path: '/nonexistent' }, conf({ 'cni.dev/valid-attachments': [] }));
    assert.equal(gc.json?.code, 7, gc.stdout);
    assert.match(gc.json.msg, /IPAM plugin 'host-local' not found in CNI_PATH/);
    assert.deepEqual(s.links(), ['lo'], 'our side is released anyway');
    assert.deepEqual(listEndpoints(stateDir), []);
    // The address stays with host-local until a GC or DEL can reach it.
    assert.equal(leases().length, 1);
    assert.equal(cni(h, { command: 'GC', extraEnv: env() }, conf({ 'cni.dev/valid-attachments': [] })).status, 0);
    assert.equal(leases().length, 1, 'no record left to DEL it by: host-local 1.1.1 has no GC of its own');
    const del = cni(h, { command: 'DEL', containerId: 'lost1', netns: '', ifname: 'eth0', extraEnv: env() }, conf());
    assert.equal(del.status, 0, del.stdout);
  });

  it('ADD with the IPAM plugin missing leaves no record behind: the same ADD then works without a DEL', () => {
    const s = sandbox();
    const call: CniCall = { command: 'ADD', containerId: 'noipam1', netns: `/run/netns/${s.name}`, ifname: 'eth0', extraEnv: env(), path: '/nonexistent' };
    const r = cni(h, call, conf());
    assert.equal(r.json?.code, 7, r.stdout);
    assert.match(r.json.msg, /IPAM plugin 'host-local' not found in CNI_PATH/);
    // Before the tier made the IPAM plugin's lookup a realize step, the drafted record stayed and the retry was refused as a second ADD.
    assert.deepEqual(listEndpoints(stateDir), []);
    assert.deepEqual(s.links(), ['lo']);
    add(s, 'noipam1');
    const del = cni(h, { command: 'DEL', containerId: 'noipam1', netns: `/run/netns/${s.name}`, ifname: 'eth0', extraEnv: env() }, conf());
    assert.equal(del.status, 0, del.stdout);
  });

  it('a host-local speaking CNI 1.1 is sent GC and STATUS; its GC frees nothing, our DEL of each collected attachment does',
    { skip: !HOST_LOCAL_11 ? 'set QNH_CNI_HOST_LOCAL_11 to an upstream host-local v1.5 or later (Debian 12 ships 1.1.1)' : existsSync('/usr/bin/strace') ? false : 'needs strace' }, () => {
      const version = cni(h, { command: 'VERSION', plugin: HOST_LOCAL_11! }, { cniVersion: '1.1.0' });
      assert.ok(version.json?.supportedVersions?.includes('1.1.0'), `${HOST_LOCAL_11} does not speak 1.1.0: ${version.stdout}`);
      const s1 = sandbox();
      const s2 = sandbox();
      add(s1, 'new1', newerDir);
      add(s2, 'new2', newerDir);
      assert.equal(leases().length, 2);
      // Its own GC, as the runtime would send it: answers 0, frees nothing.
      const direct = cni(h, { command: 'GC', plugin: HOST_LOCAL_11!, path: newerDir }, conf({ 'cni.dev/valid-attachments': [] }));
      assert.equal(direct.status, 0, direct.stdout);
      assert.equal(leases().length, 2, 'upstream host-local GC left the addresses reserved');
      // What we send it, seen by strace: the commands host-local was executed with.
      const sent = (command: string, body: Record<string, unknown>): string[] => {
        const log = join(newerDir, `${command}.strace`);
        const r = cni(h, { command, extraEnv: env(), path: newerDir, wrap: ['/usr/bin/strace', '-f', '-qq', '-v', '-s', '64', '-e', 'trace=execve', '-o', log] }, body);
        assert.equal(r.status, 0, r.stdout + r.stderr);
        return readFileSync(log, 'utf8').split('\n').filter((l) => l.includes('host-local') && !/= -1 E/.test(l)).map((l) => /CNI_COMMAND=(\w+)/.exec(l)?.[1] ?? '?');
      };
      assert.deepEqual(sent('STATUS', conf()), ['VERSION', 'STATUS']);
      assert.deepEqual(sent('GC', conf({ 'cni.dev/valid-attachments': [{ containerID: 'new1', ifname: 'eth0' }] })), ['VERSION', 'DEL', 'GC']);
      assert.equal(leases().length, 1, 'the collected one went back, the valid one stays');
      assert.deepEqual(s2.links(), ['lo']);
      const del = cni(h, { command: 'DEL', containerId: 'new1', netns: `/run/netns/${s1.name}`, ifname: 'eth0', extraEnv: env(), path: newerDir }, conf());
      assert.equal(del.status, 0, del.stdout);
    });
});
