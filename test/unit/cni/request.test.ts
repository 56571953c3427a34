// A CNI config as the setup tier's request (cni/request.ts): pure, so checked
// here on configs alone; the e2e CNI suites run the same ADDs for real.
import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import { parseConfig } from '../../../src/cni/config.js';
import type { CniEnv } from '../../../src/cni/env.js';
import { cniRequest } from '../../../src/cni/request.js';
import { attachmentId } from '../../../src/cni/store.js';

const env: CniEnv = { command: 'ADD', containerId: 'c0ffee', netns: '/run/netns/pod1', ifname: 'eth0', args: {}, path: ['/usr/lib/cni'], raw: {} };
const map = (conf: Record<string, unknown>) => {
  const raw = { cniVersion: '1.1.0', name: 'lan', type: 'qemu-net-helper', ...conf };
  return cniRequest(parseConfig(JSON.stringify(raw)), env, raw);
};

describe('cniRequest', () => {
  it("the attachment's stable id, no owner (DEL ends it), on disk at once, its facts recorded without prevResult", () => {
    const prevResult = { cniVersion: '1.1.0', interfaces: [{ name: 'lo' }] };
    const r = map({ dev: 'br0', ipam: { type: 'host-local' }, prevResult });
    assert.equal(r.draft.id, attachmentId('lan', 'c0ffee', 'eth0'));
    assert.equal(r.draft.mode, 'bridge');
    assert.equal(r.draft.transport, 'veth');
    assert.equal(r.draft.owner, null);
    assert.equal(r.draft.saveNow, true);
    assert.equal(r.draft.lifetime, undefined, 'no lifetime written: the record reads as before');
    assert.equal(r.draft.uid, undefined);
    assert.deepEqual(r.draft.info, { cni: r.info });
    assert.deepEqual(r.info, {
      network: 'lan', containerId: 'c0ffee', ifname: 'eth0', netns: '/run/netns/pod1', transport: 'veth',
      conf: { cniVersion: '1.1.0', name: 'lan', type: 'qemu-net-helper', dev: 'br0', ipam: { type: 'host-local' } },
    });
    assert.deepEqual(r.draft.wanted, { dev: 'br0' });
    assert.equal(r.mac, undefined);
  });

  it("what it would take: the device, the MAC (runtimeConfig's over the config's), the VF pool", () => {
    const m = map({ transport: 'macvtap', mode: 'passthrough', dev: 'eth1', mac: '52:54:00:AA:00:01', runtimeConfig: { mac: '52:54:00:aa:00:02' } });
    assert.deepEqual(m.draft.wanted, { dev: 'eth1', mac: '52:54:00:aa:00:02' });
    assert.equal(m.mac, '52:54:00:aa:00:02');
    assert.equal(m.draft.mode, 'passthrough');
    const own = map({ transport: 'macvtap', dev: 'eth1', mac: '52:54:00:AA:00:01' });
    assert.deepEqual(own.draft.wanted, { dev: 'eth1', mac: '52:54:00:aa:00:01' }, 'MACs compare as formatMac writes them');
    assert.equal(own.mac, '52:54:00:AA:00:01', 'the attach functions get the MAC as given');
    const vf = map({ transport: 'vf', vfPool: ['0000:03:10.1', 'enp3s0'] });
    assert.equal(vf.draft.mode, 'passthrough');
    assert.deepEqual(vf.draft.wanted, { vfs: ['0000:03:10.1', 'enp3s0'] });
    const port = map({ transport: 'vhost-user' });
    assert.deepEqual(port.draft.wanted, {}, 'a switch port takes no device: nothing to reap for');
  });

  it('another container or ifname is another attachment', () => {
    const a = map({ dev: 'br0' }).draft.id;
    const b = cniRequest(parseConfig(JSON.stringify({ cniVersion: '1.1.0', name: 'lan', type: 'qemu-net-helper', dev: 'br0' })), { ...env, ifname: 'eth1' }, {}).draft.id;
    assert.notEqual(a, b);
    assert.match(a, /^cni-[0-9a-f]{24}$/);
  });
});
