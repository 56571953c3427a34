// Kernel lab: what this host's kernel cannot do. VLANs from a profile's
// `vlan` (802.1q) in macvtap and bridge modes, a dummy device as --dev of
// macvtap modes, and `run` with one vhost-net fd per queue. Frames go
// through vhost-net with our driver as the guest (test/lib/vhost-net-guest.ts);
// a reply from an address that only exists on the VLAN proves the tagging.
import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import { mkdirSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, before, describe, it } from 'node:test';
import { ExitCode, HelperError } from '../../src/errors.js';
import { runWithNics } from '../../src/launch/launcher.js';
import { parseNicSpec } from '../../src/launch/nic-spec.js';
import { setupNic, splitFds } from '../../src/launch/setup-nic.js';
import { processHost } from '../../src/host/context.js';
import { arpRequest } from '../lib/frames.js';
import { counters, driveArpPing, ip, VhostGuest } from '../lib/vhost-net-guest.js';

const sfx = randomBytes(2).toString('hex');
const up = `qv${sfx}`;        // macvtap parent (veth), peer carries VLAN 42
const br = `qb${sfx}`;        // VLAN-filtering bridge
const trunk = `qt${sfx}`;     // bridge port (veth), peer carries VLAN 43
const dummy = `qd${sfx}`;
let config: string;
const profile = (name: string, p: Record<string, unknown>): string => {
  writeFileSync(join(config, 'profiles', `${name}.json`), JSON.stringify(p));
  return `profile=${name},config=${config}`;
};
const links = (): string => ip('-o', 'link', 'show');

describe('VLANs, dummy parents and run with vhost-net (lab kernel)', () => {
  before(() => {
    config = mkdtempSync(join(tmpdir(), 'qnh-lab-cfg-'));
    mkdirSync(join(config, 'profiles'));
    ip('link', 'add', up, 'type', 'veth', 'peer', 'name', `${up}p`);
    ip('link', 'add', 'link', `${up}p`, 'name', `${up}p.42`, 'type', 'vlan', 'id', '42');
    ip('addr', 'add', '10.97.0.1/24', 'dev', `${up}p.42`);
    for (const l of [up, `${up}p`, `${up}p.42`]) ip('link', 'set', l, 'up');
    ip('link', 'add', br, 'type', 'bridge', 'vlan_filtering', '1');
    ip('link', 'add', trunk, 'type', 'veth', 'peer', 'name', `${trunk}p`);
    ip('link', 'set', trunk, 'master', br);
    spawnSync('bridge', ['vlan', 'add', 'dev', trunk, 'vid', '43']);
    ip('link', 'add', 'link', `${trunk}p`, 'name', `${trunk}p.43`, 'type', 'vlan', 'id', '43');
    ip('addr', 'add', '10.96.0.1/24', 'dev', `${trunk}p.43`);
    for (const l of [br, trunk, `${trunk}p`, `${trunk}p.43`]) ip('link', 'set', l, 'up');
    ip('link', 'add', dummy, 'type', 'dummy');
    ip('link', 'set', dummy, 'up');
  });
  after(() => {
    for (const l of [up, br, trunk, dummy]) { try { ip('link', 'del', l); } catch { /* gone */ } }
    rmSync(config, { recursive: true, force: true });
  });

  it('macvtap with vlan 42 (profile): sits on the VLAN link it made, talks to an address only VLAN 42 has, removes the link', async (t) => {
    const n = setupNic(parseNicSpec(`${profile('v42', { mode: 'vepa', dev: up, vlan: 42, mac: '52:54:00:97:00:02' })},vhost=on`, 0), processHost(), process.env);
    try {
      assert.match(ip('-d', '-o', 'link', 'show', `${up}.42`), /vlan protocol 802.1Q id 42/);
      assert.match(ip('-o', 'link', 'show', n.choice.endpoint.ifname), new RegExp(`@${up}\\.42`));
      t.diagnostic(await driveArpPing(n, '10.97.0.1', '10.97.0.2', `${up}p.42`));
    } finally {
      n.undo();
    }
    assert.doesNotMatch(links(), new RegExp(`${up}\\.42`));
  });

  it('bridge mode with vlan 43: the tap is an untagged PVID-43 port; ARP and ping reach VLAN 43 over the trunk', async (t) => {
    const n = setupNic(parseNicSpec(`${profile('v43', { mode: 'bridge', dev: br, vlan: 43, mac: '52:54:00:96:00:02' })},vhost=on`, 0), processHost(), process.env);
    try {
      const tap = n.choice.endpoint.ifname;
      const vl = spawnSync('bridge', ['-j', 'vlan', 'show', 'dev', tap], { encoding: 'utf8' }).stdout;
      assert.match(vl, /"vlan":43,"flags":\["PVID","Egress Untagged"\]/);
      assert.doesNotMatch(vl, /"vlan":1,/);
      t.diagnostic(await driveArpPing(n, '10.96.0.1', '10.96.0.2', `${trunk}p.43`));
    } finally {
      n.undo();
    }
  });

  it('bridge mode with a vlan on a bridge without VLAN filtering: exit 8, one clear line, no tap left', () => {
    const plain = `qn${sfx}`;
    ip('link', 'add', plain, 'type', 'bridge');
    try {
      assert.throws(() => setupNic(parseNicSpec(`${profile('v44', { mode: 'bridge', dev: plain, vlan: 44 })},vhost=on`, 0), processHost(), process.env),
        (e: unknown) => e instanceof HelperError && e.exitCode === ExitCode.CONFIG && /does not filter VLANs.*vlan_filtering 1/.test(e.line()));
      assert.equal(ip('-o', 'link', 'show', 'master', plain).trim(), '');
    } finally {
      ip('link', 'del', plain);
    }
  });

  it('a dummy device as --dev: two macvtaps (veb = macvtap bridge mode) on it hear each other through vhost-net', async () => {
    const a = setupNic(parseNicSpec(`mode=veb,dev=${dummy},vhost=on,mac=52:54:00:95:00:0a`, 0), processHost(), process.env);
    const b = setupNic(parseNicSpec(`mode=veb,dev=${dummy},vhost=on,mac=52:54:00:95:00:0b`, 1), processHost(), process.env);
    const fa = splitFds(a.choice), fb = splitFds(b.choice);
    const ga = new VhostGuest(fa.vhostFds[0]!, fa.queueFds[0]!);
    const gb = new VhostGuest(fb.vhostFds[0]!, fb.queueFds[0]!);
    try {
      assert.equal(a.choice.endpoint.kernel, 'macvtap');
      const before = counters(dummy);
      ga.send([arpRequest('52:54:00:95:00:0a', '10.95.0.10', '10.95.0.11')]);
      const got = await gb.waitRx((f) => Buffer.from(f).subarray(6, 12).equals(Buffer.from([0x52, 0x54, 0x00, 0x95, 0x00, 0x0a])));
      assert.equal(Buffer.from(got).readUInt16BE(12), 0x0806);
      // Broadcast also leaves through the dummy (which drops it): its TX counter moves.
      assert.ok(counters(dummy).tx > before.tx);
    } finally {
      ga.close(); gb.close();
      b.undo(); a.undo();
    }
    assert.doesNotMatch(ip('-o', 'link', 'show', 'type', 'macvtap'), new RegExp(`@${dummy}`));
  });

  // In-process (the CLI's oclif start-up costs ~45 s under TCG); the CLI itself is tested on the host.
  it('run: 2 queues with vhost-net = fds 3:4 (tap queues) and 5:6 (/dev/vhost-net), bridge and macvtap', async () => {
    const out = join(config, 'fds.txt');
    const log: string[] = [];
    const code = await runWithNics({ nics: [`mode=bridge,br=${br},queues=2,vhost=on`], command: ['sh', '-c', `for f in 3 4 5 6; do readlink /proc/self/fd/$f; done > ${out}; exit 3`], log: (l) => log.push(l) });
    assert.equal(code, 3);
    assert.deepEqual(readFileSync(out, 'utf8').trim().split('\n'), ['/dev/net/tun', '/dev/net/tun', '/dev/vhost-net', '/dev/vhost-net']);
    assert.match(log.join('\n'), /bridge\/vhost-kernel tap\d+, 2 queue\(s\) with vhost-net/);
    const printed: string[] = [];
    const dry = await runWithNics({ dryRun: true, nics: [`mode=vepa,dev=${dummy},queues=2,vhost=on,mac=52:54:00:95:00:0c`], command: ['qemu-system-x86_64'], log: () => undefined, out: (l) => printed.push(l) });
    assert.equal(dry, 0);
    assert.deepEqual(printed, ['qemu-system-x86_64 -netdev tap,id=n0,fds=3:4,vhost=on,vhostfds=5:6 -device virtio-net-pci,netdev=n0,mq=on,vectors=6,mac=52:54:00:95:00:0c']);
    assert.doesNotMatch(ip('-o', 'link', 'show', 'type', 'macvtap'), new RegExp(`@${dummy}`));
  });
});
