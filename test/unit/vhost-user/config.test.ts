// The switch's configuration file (vhost-user/config.ts): zod checks, flags
// over the file, and the running switch written back.
import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import { mergeSettings, parseSwitchConfig, settingsToFile, type ServeFlags } from '../../../src/vhost-user/config.js';

const noFlags: ServeFlags = { socket: [], client: false, 'allow-unsealed-memory': false };

describe('switch configuration', () => {
  it('accepts the documented fields and refuses the rest with the field named', () => {
    const c = parseSwitchConfig(JSON.stringify({
      control: '/run/qemu-net-helper/switch.ctl', mode: 'vepa', uplink: { bridge: 'br0' },
      ports: [{ socket: '/run/vm1.sock' }, { socket: '/run/vm2.sock', mode: 'private', client: true }],
      socketMode: '0660', socketGroup: 'kvm', queues: 2, poll: 'busy', allowUnsealedMemory: false, metrics: '127.0.0.1:9469', statsInterval: 60,
    }), 'f.json');
    assert.equal(c.ports?.length, 2);
    assert.throws(() => parseSwitchConfig('{"uplink":{"device":"a b"}}', 'f.json'), /invalid switch configuration f\.json: uplink/);
    assert.throws(() => parseSwitchConfig('{"socketMode":"777x"}', 'f.json'), /socketMode: an octal mode/);
    assert.throws(() => parseSwitchConfig(`{"ports":[{"socket":"/${'x'.repeat(110)}"}]}`, 'f.json'), /at most 107 bytes/);
    assert.throws(() => parseSwitchConfig('[]', 'f.json'), /\(top level\)/);
  });

  it('flags win over the file; --socket adds ports after the file\'s; defaults fill the rest', () => {
    const file = parseSwitchConfig('{"mode":"private","uplink":{"device":"eth1"},"ports":[{"socket":"/a.sock"}],"queues":2}', 'f');
    const s = mergeSettings(file, { ...noFlags, socket: ['/b.sock'], client: true, br: 'br0', mode: 'veb' });
    assert.deepEqual(s, { mode: 'veb', uplink: { bridge: 'br0' }, ports: [{ socket: '/a.sock' }, { socket: '/b.sock', client: true }], queues: 2, poll: 'event', allowUnsealedMemory: false, statsInterval: 0, offloads: true, uplinkTx: 'auto' });
    assert.deepEqual(mergeSettings(null, noFlags), { mode: 'veb', ports: [], queues: 1, poll: 'event', allowUnsealedMemory: false, statsInterval: 0, offloads: true, uplinkTx: 'auto' });
    assert.throws(() => mergeSettings(file, { ...noFlags, socket: ['/a.sock'] }), /--socket \/a\.sock is given twice/);
    assert.throws(() => mergeSettings(null, { ...noFlags, br: 'br0', uplink: 'eth0' }), /exclusive/);
  });

  it('writes the running ports back, with a mode only where it differs from the default', () => {
    const s = mergeSettings(null, { ...noFlags, control: '/run/sw.ctl', mode: 'vepa' });
    const out = settingsToFile(s, [{ socket: '/a.sock', mode: 'vepa', client: false }, { socket: '/b.sock', mode: 'veb', client: true }]);
    assert.deepEqual(out, { control: '/run/sw.ctl', mode: 'vepa', ports: [{ socket: '/a.sock' }, { socket: '/b.sock', mode: 'veb', client: true }], queues: 1, poll: 'event' });
    // What is written reads back as the same settings.
    assert.deepEqual(mergeSettings(parseSwitchConfig(JSON.stringify(out), 'f'), noFlags).ports, out.ports);
  });

  it('tenancy, limits and offloads: in the file, flags over them, owners written back', () => {
    const file = parseSwitchConfig(JSON.stringify({
      ports: [{ socket: '/a.sock', owner: { uid: 1000, gid: 1000 } }], controlGroup: 'kvm', socketOwner: 'nobody',
      maxPortsPerUser: 4, maxGuestMemory: '64G', maxMemRegions: 8, offloads: false,
    }), 'f');
    const s = mergeSettings(file, { ...noFlags, 'max-ports-per-user': 2, offloads: 'on' });
    assert.deepEqual([s.controlGroup, s.socketOwner, s.maxPortsPerUser, s.maxGuestMemory, s.maxMemRegions, s.offloads], ['kvm', 'nobody', 2, '64G', 8, true]);
    assert.equal(mergeSettings(file, noFlags).offloads, false);
    const out = settingsToFile(s, [{ socket: '/a.sock', mode: 'veb', client: false, owner: { uid: 1000, gid: 1000 } }, { socket: '/b.sock', mode: 'veb', client: false, owner: { uid: 0, gid: 0 } }], { uid: 0, gid: 0 });
    assert.deepEqual(out.ports, [{ socket: '/a.sock', owner: { uid: 1000, gid: 1000 } }, { socket: '/b.sock' }], 'the default owner is not written');
    assert.deepEqual(mergeSettings(parseSwitchConfig(JSON.stringify(out), 'f'), noFlags).ports, out.ports);
    assert.throws(() => parseSwitchConfig('{"ports":[{"socket":"/a.sock","owner":{"uid":-1,"gid":0}}]}', 'f'), /ports\.0\.owner\.uid/);
    assert.throws(() => parseSwitchConfig('{"maxGuestMemory":"lots"}', 'f'), /maxGuestMemory: a size/);
  });

  it('uplinkTx: in the file, the flag over it, written back only when not auto', () => {
    const file = parseSwitchConfig('{"uplink":{"device":"eth1"},"uplinkTx":"packet"}', 'f');
    assert.equal(mergeSettings(file, noFlags).uplinkTx, 'packet');
    const s = mergeSettings(file, { ...noFlags, 'uplink-tx': 'xdp' });
    assert.equal(s.uplinkTx, 'xdp');
    assert.equal(settingsToFile(s, []).uplinkTx, 'xdp');
    assert.equal('uplinkTx' in settingsToFile(mergeSettings(null, noFlags), []), false);
    assert.throws(() => parseSwitchConfig('{"uplinkTx":"afxdp"}', 'f'), /uplinkTx/);
  });
});
