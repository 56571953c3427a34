// IPv4 math on ipaddr.js (src/net/ipv4.ts): edges of the 32-bit range, the
// spellings we refuse, and the subnet helpers the ACL and the NAT planner share.
import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import { UsageError } from '../../../src/errors.js';
import { broadcastOf, cidrOrNull, contains, ipToNumber, maskOf, numberToIp, overlaps, parseSubnet, subnetOf, subnetToString, within } from '../../../src/net/ipv4.js';

describe('IPv4 math', () => {
  it('round-trips the ends of the range', () => {
    assert.equal(ipToNumber('0.0.0.0'), 0);
    assert.equal(ipToNumber('255.255.255.255'), 0xffffffff);
    assert.equal(numberToIp(ipToNumber('10.213.0.1')), '10.213.0.1');
    assert.equal(maskOf(0), 0);
    assert.equal(maskOf(32), 0xffffffff);
    assert.equal(maskOf(24), 0xffffff00);
    assert.equal(numberToIp(broadcastOf(parseSubnet('0.0.0.0/0'))), '255.255.255.255');
    assert.equal(numberToIp(broadcastOf(parseSubnet('10.0.0.7/32'))), '10.0.0.7');
  });

  it('takes only four decimal numbers: no short, hex, octal-looking or padded forms', () => {
    for (const bad of ['10.1', '0x0a.0.0.1', '010.0.0.1', '256.0.0.1', ' 10.0.0.1', '10.0.0.1 ', '::1', '']) {
      assert.throws(() => ipToNumber(bad), UsageError, bad);
      assert.equal(cidrOrNull(`${bad}/8`), null, bad);
    }
  });

  it('subnets of an address, containment and overlap', () => {
    assert.equal(subnetToString(subnetOf('192.168.7.9', 20)), '192.168.0.0/20');
    assert.equal(subnetToString(subnetOf('192.168.7.9', 0)), '0.0.0.0/0');
    assert.deepEqual(cidrOrNull('10.213.4.9/16'), { network: ipToNumber('10.213.0.0'), prefix: 16 });
    assert.equal(cidrOrNull('10.0.0.0/33'), null);
    assert.equal(cidrOrNull('10.0.0.0'), null);
    const s16 = cidrOrNull('10.213.0.0/16')!;
    assert.ok(within(cidrOrNull('10.213.4.0/24')!, s16));
    assert.ok(within(s16, s16));
    assert.ok(!within(s16, cidrOrNull('10.213.4.0/24')!), 'a wider prefix is not within a narrower one');
    assert.ok(!within(cidrOrNull('10.214.0.0/24')!, s16));
    assert.ok(within(s16, cidrOrNull('0.0.0.0/0')!));
    assert.ok(contains(s16, ipToNumber('10.213.255.255')));
    assert.ok(!contains(s16, ipToNumber('10.212.255.255')));
    assert.ok(overlaps(cidrOrNull('10.213.4.0/24')!, s16));
    assert.ok(!overlaps(cidrOrNull('10.214.0.0/16')!, s16));
  });
});
