// The identity rules release applies to a recorded link (klink.ts): what a
// record must carry, and which live link counts as the one it names.
import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import { identityMismatch, linkMarker, MARKER_PREFIX, recordedIdentity, type LinkIdentity } from '../../../../src/backends/kernel/klink.js';
import type { LinkInfo } from '../../../../src/net/ip.js';

describe('link identity for release', () => {
  const id: LinkIdentity = { ifname: 'tap3', ifindex: 7, marker: 'qemu-net-helper:vm1' };
  const live = (over: Partial<LinkInfo> = {}): LinkInfo => ({
    ifname: 'tap3', ifindex: 7, mtu: 1500, ifalias: 'qemu-net-helper:vm1', linkinfo: { info_kind: 'tun' }, ...over,
  });

  it('the marker names the endpoint, or the kernel implementation when there is no valid endpoint id', () => {
    assert.equal(linkMarker({ endpointId: 'ep-abc' }, 'veth'), 'qemu-net-helper:ep-abc');
    assert.equal(linkMarker({}, 'veth'), 'qemu-net-helper:veth');
    assert.equal(linkMarker({ endpointId: '../x' }, 'nat'), 'qemu-net-helper:nat');
    assert.equal(linkMarker({ endpointId: 'a'.repeat(65) }, 'nat'), 'qemu-net-helper:nat');
    assert.ok(linkMarker({ endpointId: 'a'.repeat(64) }, 'nat').length < 255, 'fits in an ifalias');
  });

  it('a record without a valid name, ifindex or marker of ours proves nothing', () => {
    assert.deepEqual(recordedIdentity({ ifname: 'tap3', ifindex: 7, marker: 'qemu-net-helper:vm1' }), id);
    for (const bad of [
      { ifindex: 7, marker: 'qemu-net-helper:vm1' },
      { ifname: 'a/b', ifindex: 7, marker: 'qemu-net-helper:vm1' },
      { ifname: 'tap3', marker: 'qemu-net-helper:vm1' },
      { ifname: 'tap3', ifindex: '7', marker: 'qemu-net-helper:vm1' },
      { ifname: 'tap3', ifindex: 0, marker: 'qemu-net-helper:vm1' },
      { ifname: 'tap3', ifindex: 7 },
      { ifname: 'tap3', ifindex: 7, marker: 'libvirt:vm1' },
    ]) {
      assert.equal(typeof recordedIdentity(bad), 'string', JSON.stringify(bad));
    }
  });

  it('a live link matches only with the same kind, ifindex and marker', () => {
    assert.equal(identityMismatch(live(), id, ['tun']), null);
    assert.match(identityMismatch(live({ linkinfo: { info_kind: 'veth' } }), id, ['tun'])!, /is a veth, not a tun/);
    assert.match(identityMismatch(live({ linkinfo: {} }), id, ['tun'])!, /is a device/);
    assert.match(identityMismatch(live({ ifindex: 8 }), id, ['tun'])!, /ifindex 8, the record says 7/);
    assert.match(identityMismatch(live({ ifalias: 'qemu-net-helper:vm2' }), id, ['tun'])!, /does not carry our marker/);
    const { ifalias: _, ...noAlias } = live();
    assert.match(identityMismatch(noAlias as LinkInfo, id, ['tun'])!, /its alias: none/);
    assert.ok(MARKER_PREFIX.endsWith(':'));
  });
});
