// `run`: --nic SPEC parsing and the QEMU arguments for inherited NIC fds.
import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import { ExitCode, HelperError } from '../../../src/errors.js';
import { parseNicSpec, parseNicSpecs } from '../../../src/launch/nic-spec.js';
import { deviceArg, memoryMiB, netdevArg, sharedMemoryArgs, shellLine, vhostUserNicArgs, wantsKvm } from '../../../src/launch/qemu-args.js';

const usage = (f: () => unknown, re: RegExp): void => {
  assert.throws(f, (e: unknown) => e instanceof HelperError && e.exitCode === ExitCode.USAGE && re.test(e.message));
};

describe('run --nic SPEC', () => {
  it('maps keys to the helper flags', () => {
    const s = parseNicSpec('mode=vepa,dev=eth1,mac=52:54:00:AB:cd:01,queues=4,vhost=on,mtu=9000,vf-pool=pf0+0000:03:10.1,id=lan', 0);
    assert.deepEqual(s.warnings, []);
    assert.equal(s.id, 'lan');
    assert.equal(s.vhost, 'on');
    assert.equal(s.mac, '52:54:00:ab:cd:01');
    assert.deepEqual({ mode: s.args.mode, dev: s.args.dev, queues: s.args.queues, mtu: s.args.mtu, vfPool: s.args.vfPool, useVnet: s.args.useVnet },
      { mode: 'vepa', dev: 'eth1', queues: 4, mtu: 9000, vfPool: ['pf0', '0000:03:10.1'], useVnet: true });
    const b = parseNicSpec('br=br7', 3);
    assert.equal(b.id, 'n3');
    assert.equal(b.vhost, 'auto');
    assert.equal(b.args.bridge, 'br7');
    assert.equal(b.args.bridgeGiven, true);
  });
  it('one spelling: vf-pool as the flag --vf-pool; the old vfpool still works, with a deprecation line', () => {
    const old = parseNicSpec('mode=passthrough,vfpool=pf0+pf1', 0);
    assert.deepEqual(old.args.vfPool, ['pf0', 'pf1']);
    assert.deepEqual(old.warnings, ["--nic key 'vfpool' is deprecated, write 'vf-pool' (the old spelling goes in the next release)"]);
    usage(() => parseNicSpec('vfpool=pf0,vf-pool=pf1', 0), /'vf-pool' given twice/);
  });
  it('refuses bad input with one clear line', () => {
    usage(() => parseNicSpec('mode=bridge,colour=red', 0), /unknown key 'colour'/);
    usage(() => parseNicSpec('mode', 0), /'mode' is not key=value/);
    usage(() => parseNicSpec('queues=0', 0), /queues='0' is not a number from 1 to 16/);
    usage(() => parseNicSpec('queues=17', 0), /from 1 to 16/);
    usage(() => parseNicSpec('vhost=maybe', 0), /vhost='maybe'/);
    usage(() => parseNicSpec('br=br0,br=br1', 0), /'br' given twice/);
    usage(() => parseNicSpec('mac=01:00:5e:00:00:01', 0), /multicast/);
    usage(() => parseNicSpec('id=1x', 0), /not a QEMU id/);
    usage(() => parseNicSpec('dev=', 0), /has no value/);
    usage(() => parseNicSpecs(['br=br0,id=a', 'br=br1,id=a']), /id 'a' is used by another --nic/);
  });
});

describe('QEMU arguments for inherited fds', () => {
  it('single queue, no vhost', () => {
    assert.equal(netdevArg({ id: 'n0', queueFds: [3], vhostFds: [] }), 'tap,id=n0,fd=3,vhost=off');
    assert.equal(deviceArg({ id: 'n0', queueFds: [3], vhostFds: [] }), 'virtio-net-pci,netdev=n0');
  });
  it('single queue with vhost-net', () => {
    assert.equal(netdevArg({ id: 'n0', queueFds: [3], vhostFds: [4] }), 'tap,id=n0,fd=3,vhost=on,vhostfd=4');
  });
  it('4 queues with vhost-net: fds, vhostfds, mq=on, vectors=2N+2', () => {
    const n = { id: 'n1', queueFds: [3, 4, 5, 6], vhostFds: [7, 8, 9, 10], mac: '52:54:00:00:00:01' };
    assert.equal(netdevArg(n), 'tap,id=n1,fds=3:4:5:6,vhost=on,vhostfds=7:8:9:10');
    assert.equal(deviceArg(n), 'virtio-net-pci,netdev=n1,mq=on,vectors=10,mac=52:54:00:00:00:01');
  });
  it('refuses mismatched vhost fds', () => {
    assert.throws(() => netdevArg({ id: 'n0', queueFds: [3, 4], vhostFds: [5] }), /2 queues but 1 vhost-net fds/);
  });
  it('shell line quotes what needs quoting', () => {
    assert.equal(shellLine(['qemu', '-append', "console=ttyS0 it's", '-m', '1G']), `qemu -append 'console=ttyS0 it'\\''s' -m 1G`);
  });
});

describe('run: vhost-user NICs', () => {
  it('a vhost=user SPEC asks for the vhost-user transport only', () => {
    assert.equal(parseNicSpec('mode=veb,vhost=user', 0).vhost, 'user');
  });
  it('chardev, netdev and device; vectors=0 under TCG only', () => {
    assert.deepEqual(vhostUserNicArgs('n0', '/run/p.sock', '52:54:00:00:00:01', false),
      ['-chardev', 'socket,id=chr-n0,path=/run/p.sock', '-netdev', 'vhost-user,id=n0,chardev=chr-n0', '-device', 'virtio-net-pci,netdev=n0,vectors=0,mac=52:54:00:00:00:01']);
    assert.equal(vhostUserNicArgs('n0', '/s', undefined, true)[5], 'virtio-net-pci,netdev=n0');
    assert.equal(wantsKvm(['-machine', 'pc,accel=kvm']), true);
    assert.equal(wantsKvm(['-enable-kvm']), true);
    assert.equal(wantsKvm(['-machine', 'pc,accel=tcg']), false);
  });
  it('shared guest memory of -m\'s size, unless the command shares it already', () => {
    assert.equal(memoryMiB(['-m', '256']), 256);
    assert.equal(memoryMiB(['-m', '2G']), 2048);
    assert.equal(memoryMiB(['-m', 'size=512M,maxmem=1G']), 512);
    assert.equal(memoryMiB([]), 128);
    assert.deepEqual(sharedMemoryArgs(['-m', '256']), ['-object', 'memory-backend-memfd,id=qnh-mem,size=256M,share=on', '-machine', 'memory-backend=qnh-mem']);
    assert.deepEqual(sharedMemoryArgs(['-object', 'memory-backend-memfd,id=m,size=1G,share=on']), []);
  });
});
