// Release's own identity rule (lifecycle/release.ts): an object carrying
// another endpoint's marker is never this record's to release; and how
// objects are named in reports.
import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import { describeOwned, foreignMarker } from '../../../src/lifecycle/release.js';
import type { EndpointRecord } from '../../../src/state/endpoints.js';

const r = { id: 'ep-1' } as EndpointRecord;

describe('foreignMarker', () => {
  it('an object with this endpoint\'s marker, or none, is this record\'s', () => {
    assert.equal(foreignMarker(r, { marker: 'qemu-net-helper:ep-1' }), null);
    assert.equal(foreignMarker(r, { ifname: 'tap0' }), null, 'objects without markers are checked by their kernel implementation');
  });

  it('one naming another endpoint (a forged or stale record) is left alone, and says whose it is', () => {
    assert.match(foreignMarker(r, { marker: 'qemu-net-helper:ep-2' })!, /carries marker "qemu-net-helper:ep-2", not endpoint ep-1's/);
    assert.notEqual(foreignMarker(r, { marker: 'qemu-net-helper:ep-1x' }), null);
    assert.notEqual(foreignMarker(r, { marker: 7 }), null);
  });
});

describe('describeOwned', () => {
  it('names an object by interface, PCI address, bridge or route destination', () => {
    assert.equal(describeOwned('macvtap', { ifname: 'macvtap0', parent: 'eth1' }), 'macvtap macvtap0');
    assert.equal(describeOwned('sriov-vf', { pci: '0000:03:10.1' }), 'sriov-vf 0000:03:10.1');
    assert.equal(describeOwned('route', { dst: '10.0.0.2/32' }), 'route 10.0.0.2/32');
    assert.equal(describeOwned('nft', {}), 'nft');
  });
});
