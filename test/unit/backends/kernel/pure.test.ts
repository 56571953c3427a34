// The pure parts of the kernel implementations: MAC rules, subnet arithmetic,
// the NAT ruleset and dnsmasq command line, macvtap mode mapping. No root,
// no kernel objects.
import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import { macvtapModeFor } from '../../../../src/backends/kernel/macvtap.js';
import { dhcpRange, natBridgeName, natRuleset, natTableName, pickDefaultSubnet } from '../../../../src/backends/kernel/nat.js';
import { ConfigError, ExitCode, UsageError } from '../../../../src/errors.js';
import { dnsmasqArgs } from '../../../../src/net/dnsmasq.js';
import { broadcastOf, contains, ipToNumber, netmaskOf, numberToIp, overlaps, parseSubnet, subnetToString } from '../../../../src/net/ipv4.js';
import {
  checkGuestMac, formatMac, generateMac, guestMacProblem, isMulticastMac, parseGuestMac, parseMac,
} from '../../../../src/net/mac.js';
import { isNftIdentifier } from '../../../../src/net/nft.js';

describe('kernel: MAC addresses', () => {
  it("generated MACs are QEMU's 52:54:00:xx:xx:xx, unicast, and never QEMU's own defaults", () => {
    for (let i = 0; i < 2000; i++) {
      const m = generateMac();
      assert.equal(m.length, 6);
      assert.match(formatMac(m), /^52:54:00:/);
      assert.ok(!isMulticastMac(m), formatMac(m));
      assert.equal(guestMacProblem(m), null);
    }
    assert.equal(formatMac(generateMac(() => Buffer.from([0xab, 0xcd, 0xef]))), '52:54:00:ab:cd:ef');
    // 52:54:00:12:34:5x is what QEMU gives guests without mac=; zero is no address: both drawn again.
    const draws = [Buffer.from([0x12, 0x34, 0x56]), Buffer.from([0, 0, 0]), Buffer.from([0x12, 0x34, 0x60])];
    assert.equal(formatMac(generateMac(() => draws.shift()!)), '52:54:00:12:34:60');
  });

  it('parses the usual spellings and refuses malformed ones', () => {
    assert.equal(formatMac(parseMac('52:54:00:AB:cd:01')!), '52:54:00:ab:cd:01');
    assert.equal(formatMac(parseMac('52-54-00-ab-cd-01')!), '52:54:00:ab:cd:01');
    assert.equal(formatMac(parseMac('525400abcd01')!), '52:54:00:ab:cd:01');
    for (const bad of ['52:54:00:ab:cd', '52:54-00:ab:cd:01', 'zz:54:00:ab:cd:01', '']) assert.equal(parseMac(bad), null, bad);
    assert.throws(() => parseGuestMac('nonsense'), (e: unknown) => e instanceof UsageError && /is not a MAC address/.test(e.message));
  });

  it('refuses multicast, broadcast and all-zero MACs with a usage error', () => {
    for (const [text, why] of [['01:00:5e:00:00:01', /multicast/], ['ff:ff:ff:ff:ff:ff', /multicast/], ['33:33:00:00:00:01', /multicast/], ['00:00:00:00:00:00', /all zero/]] as const) {
      assert.throws(() => checkGuestMac(parseMac(text)!), (e: unknown) => e instanceof UsageError && e.exitCode === ExitCode.USAGE && why.test(e.message), text);
    }
    assert.equal(formatMac(checkGuestMac(parseMac('00:16:3e:00:00:01')!)), '00:16:3e:00:00:01', 'a vendor (globally administered) unicast MAC is fine');
  });
});

describe('kernel: IPv4 subnets', () => {
  it('parses CIDRs strictly', () => {
    const s = parseSubnet('10.213.4.0/24');
    assert.equal(subnetToString(s), '10.213.4.0/24');
    assert.equal(numberToIp(broadcastOf(s)), '10.213.4.255');
    assert.equal(netmaskOf(24), '255.255.255.0');
    assert.equal(netmaskOf(28), '255.255.255.240');
    assert.ok(contains(s, ipToNumber('10.213.4.77')));
    assert.ok(!contains(s, ipToNumber('10.213.5.1')));
    assert.throws(() => parseSubnet('10.0.0.1/24'), (e: unknown) => e instanceof UsageError && /has host bits set; did you mean 10\.0\.0\.0\/24\?/.test(e.line()));
    assert.throws(() => parseSubnet('10.0.0.0/31', { maxPrefix: 30 }), /between \/0 and \/30/);
    assert.throws(() => parseSubnet('256.0.0.0/8'), /not an IPv4 CIDR/);
    assert.throws(() => parseSubnet('10.0.0.0'), /not an IPv4 CIDR/);
    assert.equal(subnetToString(parseSubnet('0.0.0.0/0')), '0.0.0.0/0');
  });

  it('overlap checks and the default NAT subnet', () => {
    assert.ok(overlaps(parseSubnet('10.0.0.0/8'), parseSubnet('10.213.0.0/24')));
    assert.ok(!overlaps(parseSubnet('10.213.0.0/24'), parseSubnet('10.213.1.0/24')));
    assert.equal(subnetToString(pickDefaultSubnet([])), '10.213.0.0/24');
    assert.equal(subnetToString(pickDefaultSubnet([parseSubnet('10.213.0.0/24'), parseSubnet('10.213.1.128/25')])), '10.213.2.0/24');
    assert.throws(() => pickDefaultSubnet([parseSubnet('10.0.0.0/8')]), (e: unknown) => e instanceof ConfigError);
    assert.deepEqual(dhcpRange(parseSubnet('10.213.0.0/24')), { start: '10.213.0.2', end: '10.213.0.254' });
    assert.deepEqual(dhcpRange(parseSubnet('192.168.9.0/30')), { start: '192.168.9.2', end: '192.168.9.2' });
  });
});

describe('kernel: NAT ruleset and dnsmasq command line', () => {
  it('names: bridge and table', () => {
    assert.equal(natBridgeName({ params: {} }), 'qnhnat0');
    assert.equal(natBridgeName({ dev: 'virbr9', params: {} }), 'virbr9');
    assert.equal(natBridgeName({ dev: 'x', params: { bridge: 'nat-lab.1' } }), 'nat-lab.1');
    assert.throws(() => natBridgeName({ dev: 'a"b', params: {} }), UsageError);
    assert.throws(() => natBridgeName({ dev: 'abcdefghijklmnop', params: {} }), /16 bytes/);
    assert.equal(natTableName('nat-lab.1'), 'qemu_net_helper_nat-lab.1');
    assert.ok(isNftIdentifier('qemu_net_helper_qnhnat0'));
    assert.ok(!isNftIdentifier('1abc') && !isNftIdentifier('a b') && !isNftIdentifier('a"b'));
  });

  it('the ruleset replaces one table atomically and masquerades only the subnet leaving the bridge', () => {
    const r = natRuleset('qemu_net_helper_br9', 'br9', parseSubnet('10.213.7.0/24'));
    const lines = r.split('\n');
    assert.deepEqual(lines.slice(0, 3), ['add table ip qemu_net_helper_br9', 'delete table ip qemu_net_helper_br9', 'table ip qemu_net_helper_br9 {']);
    assert.match(r, /type nat hook postrouting priority srcnat;/);
    assert.match(r, /ip saddr 10\.213\.7\.0\/24 ip daddr != 10\.213\.7\.0\/24 oifname != "br9" counter masquerade/);
    assert.match(r, /type filter hook forward priority filter;/);
    assert.match(r, /oifname "br9" ip daddr 10\.213\.7\.0\/24 ct state established,related counter accept/);
    assert.match(r, /oifname "br9" counter reject comment "unsolicited-inbound"/);
    assert.doesNotMatch(r, /flush ruleset|table inet filter/, 'never touches anything but its own table');
  });

  it('dnsmasq: DHCP only, our files only, every option explicit', () => {
    const args = dnsmasqArgs({ dir: '/run/q/nat/br9', iface: 'br9', rangeStart: '10.1.0.2', rangeEnd: '10.1.0.254', netmask: '255.255.255.0', leaseTime: '1h', ping: false, dnsServers: ['9.9.9.9'] },
      new Map([['52:54:00:00:00:01', '10.1.0.9']]));
    for (const a of [
      '--conf-file=/dev/null', '--pid-file=/run/q/nat/br9/dnsmasq.pid', '--dhcp-leasefile=/run/q/nat/br9/dnsmasq.leases', '--interface=br9',
      '--bind-interfaces', '--except-interface=lo', '--dhcp-range=10.1.0.2,10.1.0.254,255.255.255.0,1h', '--no-resolv', '--port=0', '--no-ping',
      '--dhcp-option=option:dns-server,9.9.9.9', '--dhcp-host=52:54:00:00:00:01,10.1.0.9',
    ]) assert.ok(args.includes(a), a);
    const withPing = dnsmasqArgs({ dir: '/d', iface: 'b', rangeStart: 'a', rangeEnd: 'b', netmask: 'm', leaseTime: '1h', ping: true });
    assert.ok(!withPing.includes('--no-ping'));
    assert.ok(!withPing.some((a) => a.startsWith('--dhcp-option')), 'no DNS server announced unless asked');
  });
});

describe('kernel: macvtap modes', () => {
  it('maps policy modes and explicit macvtapMode', () => {
    assert.equal(macvtapModeFor({ mode: 'vepa', params: {} }), 'vepa');
    assert.equal(macvtapModeFor({ mode: 'private', params: {} }), 'private');
    assert.equal(macvtapModeFor({ mode: 'veb', params: {} }), 'bridge');
    assert.equal(macvtapModeFor({ mode: 'bridge', params: {} }), 'bridge');
    assert.equal(macvtapModeFor({ mode: 'passthrough', params: {} }), 'passthru');
    assert.equal(macvtapModeFor({ mode: 'veb', params: { macvtapMode: 'private' } }), 'private');
    assert.equal(macvtapModeFor({ mode: 'veb', params: { macvtapMode: 'passthrough' } }), 'passthru');
    assert.throws(() => macvtapModeFor({ mode: 'nat', params: {} }), UsageError);
    assert.throws(() => macvtapModeFor({ mode: 'veb', params: { macvtapMode: 'source' } }), ConfigError);
    assert.throws(() => macvtapModeFor({ mode: 'veb', params: { macvtapMode: 3 } }), ConfigError);
  });
});
