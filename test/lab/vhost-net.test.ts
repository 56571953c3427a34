// Kernel lab: vhost-net moves frames. The fds come from the vhost-kernel
// transport through the policy machinery (as `run` gets them); our own
// virtqueue driver plays the guest against the vhost-net ioctls, with rings
// and buffers in our own memory, and talks ARP and ICMP with the bridge's
// address through the tap: every frame crosses vhost-net both ways.
import assert from 'node:assert/strict';
import { randomBytes } from 'node:crypto';
import { after, before, describe, it } from 'node:test';
import { parseNicSpec } from '../../src/launch/nic-spec.js';
import { setupNic } from '../../src/launch/setup-nic.js';
import { processHost } from '../../src/host/context.js';
import { driveArpPing, ip } from '../lib/vhost-net-guest.js';

describe('vhost-net moves frames (our driver as the guest)', () => {
  const suffix = randomBytes(2).toString('hex');
  const br = `qlbr${suffix}`;
  const parent = `qlup${suffix}`;
  before(() => {
    ip('link', 'add', br, 'type', 'bridge');
    ip('addr', 'add', '10.99.0.1/24', 'dev', br);
    ip('link', 'set', br, 'up');
    // An ethernet-like parent for macvtap whose other end carries the address.
    ip('link', 'add', parent, 'type', 'veth', 'peer', 'name', `${parent}p`);
    ip('addr', 'add', '10.98.0.1/24', 'dev', `${parent}p`);
    ip('link', 'set', parent, 'up');
    ip('link', 'set', `${parent}p`, 'up');
  });
  after(() => {
    for (const l of [br, parent]) { try { ip('link', 'del', l); } catch { /* gone */ } }
  });

  it('bridge mode, vhost=on: the tap and vhost-net fds from the policy carry ARP and ICMP to the bridge and back', async (t) => {
    const host = processHost();
    const n = setupNic(parseNicSpec(`mode=bridge,br=${br},vhost=on,mac=52:54:00:99:00:02`, 0), host, process.env);
    try {
      t.diagnostic(await driveArpPing(n, '10.99.0.1', '10.99.0.2', n.choice.endpoint.ifname));
    } finally {
      n.undo();
    }
  });

  it('macvtap (vepa on a veth), vhost=on: macvtap queue fd plus vhost-net fd, same exchange', async (t) => {
    const host = processHost();
    const n = setupNic(parseNicSpec(`mode=vepa,dev=${parent},vhost=on,mac=52:54:00:98:00:02`, 0), host, process.env);
    try {
      assert.equal(n.choice.endpoint.kernel, 'macvtap');
      t.diagnostic(await driveArpPing(n, '10.98.0.1', '10.98.0.2', `${parent}p`));
    } finally {
      n.undo();
    }
    assert.doesNotMatch(ip('-o', 'link', 'show', 'type', 'macvtap'), new RegExp(`@${parent}`));
  });
});
