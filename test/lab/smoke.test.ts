// Kernel lab: the lab kernel is Debian's and has what this host's lacks.
import assert from 'node:assert/strict';
import { existsSync, readFileSync } from 'node:fs';
import { release } from 'node:os';
import { it } from 'node:test';

it('runs Debian\'s kernel with /dev/vhost-net, tun, macvtap, 8021q and dummy', () => {
  assert.match(release(), /-amd64$/);
  assert.ok(existsSync('/dev/vhost-net'), '/dev/vhost-net');
  assert.ok(existsSync('/dev/net/tun'), '/dev/net/tun');
  const mods = readFileSync('/proc/modules', 'utf8');
  for (const m of ['vhost_net', 'tun', 'macvtap', '8021q', 'dummy']) assert.match(mods, new RegExp(`^${m} `, 'm'), m);
});
