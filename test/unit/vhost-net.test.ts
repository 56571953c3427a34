// /dev/vhost-net ioctl numbers and structs (test/lib/vhost-net.ts) against
// <linux/vhost.h> values and hand-written bytes; VLAN link names and ids.
import assert from 'node:assert/strict';
import { it } from 'node:test';
import { encodeIndexValue, encodeMemTable, encodeVringAddr, VHOST } from '../lib/vhost-net.js';
import { checkVlanId, vlanLinkName } from '../../src/backends/kernel/vlan.js';

it('ioctl numbers are those of <linux/vhost.h>', () => {
  assert.deepEqual(
    Object.fromEntries(Object.entries(VHOST).map(([k, v]) => [k, v.toString(16)])),
    {
      GET_FEATURES: '8008af00', SET_FEATURES: '4008af00', SET_OWNER: 'af01', SET_MEM_TABLE: '4008af03',
      SET_VRING_NUM: '4008af10', SET_VRING_ADDR: '4028af11', SET_VRING_BASE: '4008af12', GET_VRING_BASE: 'c008af12',
      SET_VRING_KICK: '4008af20', SET_VRING_CALL: '4008af21', NET_SET_BACKEND: '4008af30',
    },
  );
});

it('struct vhost_memory, vhost_vring_state/file and vhost_vring_addr bytes', () => {
  assert.equal(encodeMemTable([{ gpa: 0x4000_0000n, size: 0x40_0000n, userAddr: 0x7f12_3400_0000n }]).toString('hex'),
    '01000000' + '00000000' + '0000004000000000' + '0000400000000000' + '00000034127f0000' + '0000000000000000');
  assert.equal(encodeIndexValue(1, 256).toString('hex'), '0100000000010000');
  assert.equal(encodeIndexValue(0, -1).toString('hex'), '00000000ffffffff');
  assert.equal(encodeVringAddr(1, 0x1000n, 0x3000n, 0x2000n).toString('hex'),
    '01000000' + '00000000' + '0010000000000000' + '0030000000000000' + '0020000000000000' + '0000000000000000');
});

it('VLAN link names fit IFNAMSIZ; ids are 1..4094', () => {
  assert.equal(vlanLinkName('eth1', 3, 42), 'eth1.42');
  assert.equal(vlanLinkName('enp3s0f0np0abc', 12, 4094), 'v4094.12');
  for (const bad of [0, 4095, 1.5, -1]) assert.throws(() => checkVlanId(bad), /is not an id from 1 to 4094/);
  assert.equal(checkVlanId(4094), 4094);
});
