import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import { UsageError } from '../../../src/errors.js';
import { parseHelperArgs } from '../../../src/helper/args.js';

describe('helper argument parsing', () => {
  it("accepts QEMU's order", () => {
    assert.deepEqual(parseHelperArgs(['--use-vnet', '--fd=9', '--br=br0']), { useVnet: true, bridge: 'br0', bridgeGiven: true, fd: 9, help: false });
  });
  it("accepts libvirt's order", () => {
    assert.deepEqual(parseHelperArgs(['--use-vnet', '--br=virbr1', '--fd=23']), { useVnet: true, bridge: 'virbr1', bridgeGiven: true, fd: 23, help: false });
  });
  it('accepts separated values and our own flags anywhere', () => {
    assert.deepEqual(parseHelperArgs(['--acl', '/x.conf', '--fd', '4', '--br', 'b', '--use-vnet']), { useVnet: true, bridge: 'b', bridgeGiven: true, fd: 4, acl: '/x.conf', help: false });
  });
  it('defaults the bridge to br0 like QEMU', () => {
    assert.equal(parseHelperArgs(['--fd=3']).bridge, 'br0');
  });
  it('last value wins for repeated flags (QEMU appends --br after the user string)', () => {
    assert.equal(parseHelperArgs(['--br=a', '--fd=3', '--br=b']).bridge, 'b');
  });
  it('--help needs no --fd', () => {
    assert.equal(parseHelperArgs(['--help']).help, true);
    assert.equal(parseHelperArgs(['-h']).help, true);
  });
  const bad: [string[], RegExp][] = [
    [['--br=br0'], /missing --fd/],
    [['--fd='], /is not a file descriptor number/],
    [['--fd=-1'], /is not a file descriptor number/],
    [['--fd=3x'], /is not a file descriptor number/],
    [['--fd=12345678901'], /is not a file descriptor number/],
    [['--fd'], /needs a value/],
    [['--fd=3', '--nope'], /unknown flag '--nope'/],
    [['--fd=3', 'stray'], /unexpected argument 'stray'/],
    [['--fd=3', '--use-vnet=1'], /takes no value/],
    [['--fd=3', '--br='], /bridge name '' is empty/],
    [['--fd=3', '--br=0123456789abcdef'], /is 16 bytes/],
    [['--fd=3', '--br=a:b'], /contains a character/],
    [['--fd=3', '--br=..'], /not a valid interface name/],
    [['--fd=3', '--br=a\u0001'], /a\\x01/],
  ];
  for (const [argv, re] of bad) {
    it(`rejects ${JSON.stringify(argv)}`, () => {
      assert.throws(() => parseHelperArgs(argv), (e: unknown) => e instanceof UsageError && re.test(e.message) && e.exitCode === 2);
    });
  }
});

describe('policy flags', () => {
  it('parses policy flags and says the policy path is needed', async () => {
    const { needsPolicy } = await import('../../../src/helper/args.js');
    const a = parseHelperArgs(['--fd=3', '--mode=vepa', '--dev=eth0', '--mac=52:54:00:00:00:01', '--mtu=9000', '--vf-pool=pf0,0000:03:00.2', '--explain']);
    assert.equal(a.mode, 'vepa');
    assert.equal(a.dev, 'eth0');
    assert.equal(a.mtu, 9000);
    assert.deepEqual(a.vfPool, ['pf0', '0000:03:00.2']);
    assert.equal(needsPolicy(a), true);
    assert.equal(needsPolicy(parseHelperArgs(['--use-vnet', '--fd=3', '--br=br0'])), false);
  });
  it('the extended protocol replaces --fd', () => {
    const a = parseHelperArgs(['--socketpair=5', '--protocols=tap,vhost-kernel', '--br=br0']);
    assert.equal(a.fd, -1);
    assert.equal(a.socketpair, 5);
    assert.deepEqual(a.protocols, ['tap', 'vhost-kernel']);
  });
  it('rejects out-of-range numbers and bad device names', () => {
    assert.throws(() => parseHelperArgs(['--fd=3', '--mtu=10']), /--mtu='10' is not a number from 68 to 65535/);
    assert.throws(() => parseHelperArgs(['--fd=3', '--queues=0']), /--queues/);
    assert.throws(() => parseHelperArgs(['--fd=3', '--dev=a/b']), /device name 'a\/b'/);
  });
});
