// The routed kernel on a real kernel. H is the host with uplink u0
// (10.50.0.1/24); P is a peer on that link (10.50.0.2). The guest gets
// 10.50.0.100 — inside the uplink's subnet, reachable only through proxy ARP.
// The test plays the guest on the tap fd: it pings P, answers the host's ARP
// for its own address, and reads P's reply.
import assert from 'node:assert/strict';
import { existsSync, mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, before, describe, it } from 'node:test';
import { ExitCode } from '../../src/errors.js';
import { closeFd } from '../../src/sys/libc.js';
import { IFF_VNET_HDR, tunGetIff } from '../../src/sys/tun.js';
import { NetNs } from '../lib/netns.js';
import {
  arpReply, arpRequestTarget, assertJournaled, icmpEcho, isEchoReply, readFrameUntil, releaseInNs, setNonBlocking, setupCrashingInNs, setupFailsInNs, setupInNs, writeFrame,
  type HostOverrides, type JsonRequest, type Setup,
} from './kernel-driver.test.js';

const GUEST_IP = '10.50.0.100';
const GUEST_MAC = '52:54:00:50:00:64';

describe('route kernel', () => {
  let h: NetNs;
  let p: NetNs;
  let dir: string;
  let host: HostOverrides;
  let baseline: string[];
  let uplinkMac: string;
  const req = (r: Partial<JsonRequest> = {}): JsonRequest => ({ mode: 'route', dev: 'u0', guestIp: GUEST_IP, mac: GUEST_MAC, vnetHdr: true, queues: 1, params: {}, ...r });
  const sysctl = (dev: string, key: string): string => h.exec('cat', `/proc/sys/net/ipv4/conf/${dev}/${key}`).trim();
  before(() => {
    h = NetNs.create('qnhrH');
    p = NetNs.create('qnhrP');
    h.ip('link', 'add', 'u0', 'type', 'veth', 'peer', 'name', 'p0', 'netns', p.name);
    h.ip('addr', 'add', '10.50.0.1/24', 'dev', 'u0');
    h.ip('link', 'set', 'u0', 'up');
    p.ip('addr', 'add', '10.50.0.2/24', 'dev', 'p0');
    p.ip('link', 'set', 'p0', 'up');
    uplinkMac = (h.linkDetails('u0') as { address: string }).address;
    dir = mkdtempSync(join(tmpdir(), 'qnh-route-'));
    host = { stateDir: dir };
    baseline = h.links().sort();
  });
  after(() => {
    h?.destroy();
    p?.destroy();
    if (dir) rmSync(dir, { recursive: true, force: true });
  });
  const settingsRestored = (): void => {
    assert.equal(sysctl('u0', 'proxy_arp'), '0', 'proxy_arp on the uplink is back to 0');
    assert.equal(sysctl('u0', 'forwarding'), '0', 'forwarding on the uplink is back to 0');
    assert.equal(h.exec('cat', '/proc/sys/net/ipv4/ip_forward').trim(), '0', 'the global ip_forward is never touched');
    assert.ok(!existsSync(join(dir, 'route', 'u0.json')), 'no state left for the uplink');
  };
  const noLeftovers = (): void => {
    assert.deepEqual(h.links().sort(), baseline, 'no interface may be left behind');
    assert.equal(h.ip('route', 'show', 'proto', '213').trim(), '', 'no route of ours left');
  };
  const done = (s: Setup): void => {
    for (const fd of s.fds) closeFd(fd);
  };

  it('route to the tap, proxy ARP and forwarding on the uplink; a guest ping reaches P and P answers; release restores', async () => {
    const s = setupInNs(h, 'route', req(), host);
    try {
      const tap = s.ep.ifname;
      assert.equal(s.fds.length, 1);
      const iff = tunGetIff(s.fds[0]!);
      assert.equal(iff?.name, tap);
      assert.ok(iff!.flags & IFF_VNET_HDR);
      assert.match(h.ip('route', 'get', GUEST_IP), new RegExp(`^${GUEST_IP.replace(/\./g, '\\.')} dev ${tap} `), 'route lookup for the guest gives the tap');
      assert.match(h.ip('route', 'show', 'proto', '213'), new RegExp(`${GUEST_IP.replace(/\./g, '\\.')} dev ${tap}`));
      assert.equal(sysctl('u0', 'proxy_arp'), '1');
      assert.equal(sysctl('u0', 'forwarding'), '1');
      assert.equal(sysctl(tap, 'proxy_arp'), '1');
      assert.equal(s.ep.info.gateway, '10.50.0.1');
      assert.deepEqual(s.ep.owned.map((o) => o.kind), ['route', 'route-uplink']);
      assertJournaled(s, 'route');

      const fd = s.fds[0]!;
      setNonBlocking(fd);
      const hostMac = String(s.ep.info.hostMac);
      const id = 0x1234;
      writeFrame(fd, icmpEcho(GUEST_MAC, hostMac, GUEST_IP, '10.50.0.2', id, 1), 12);
      // The host ARPs for the guest on the tap before forwarding P's reply: answer it.
      const reply = await readFrameUntil(fd, 12, (f) => isEchoReply(f, GUEST_IP, id), 15_000, (f) => {
        if (arpRequestTarget(f) === GUEST_IP) writeFrame(fd, arpReply(f, GUEST_MAC, GUEST_IP), 12);
      });
      assert.ok(reply, "P's echo reply must come back through the host into the tap");
      const neigh = JSON.parse(p.ip('-j', 'neigh', 'show', GUEST_IP)) as { lladdr?: string }[];
      assert.equal(neigh[0]?.lladdr, uplinkMac, "P reached the guest through the host's proxy ARP answer");
    } finally {
      done(s);
      releaseInNs(h, 'route', s.ep.owned, host);
    }
    settingsRestored();
    releaseInNs(h, 'route', s.ep.owned, host); // idempotent
    noLeftovers();
  });

  it('two guests on one uplink: the settings stay until the last one is released', () => {
    const a = setupInNs(h, 'route', req(), host);
    const b = setupInNs(h, 'route', req({ guestIp: '10.50.0.101', mac: '52:54:00:50:00:65' }), host);
    try {
      releaseInNs(h, 'route', a.ep.owned, host);
      assert.equal(sysctl('u0', 'proxy_arp'), '1', 'still needed by the second guest');
      assert.equal(h.ip('route', 'show', GUEST_IP).trim(), '', "the first guest's route is gone");
      assert.match(h.ip('route', 'show', '10.50.0.101'), /dev/);
    } finally {
      done(a);
      done(b);
      releaseInNs(h, 'route', b.ep.owned, host);
    }
    settingsRestored();
    noLeftovers();
  });

  it('a guest whose QEMU died without a release does not keep the settings forever', () => {
    const a = setupInNs(h, 'route', req(), host);
    done(a); // QEMU gone: the tap and its route vanish, the uplink record stays
    const b = setupInNs(h, 'route', req({ guestIp: '10.50.0.101' }), host);
    done(b);
    releaseInNs(h, 'route', b.ep.owned, host);
    settingsRestored();
    releaseInNs(h, 'route', a.ep.owned, host); // late release of the dead one: nothing to do
    settingsRestored();
    noLeftovers();
  });

  it('a helper killed after any setup step leaves only journaled objects; releasing them restores everything', () => {
    const journalFile = join(dir, 'journal');
    let step = 1;
    for (; step < 20; step++) {
      const r = setupCrashingInNs(h, 'route', req(), { ...host, journalFile }, step);
      if (!r.killed) {
        done(r.setup!);
        releaseInNs(h, 'route', r.setup!.ep.owned, host);
        break;
      }
      releaseInNs(h, 'route', r.journal.map((j) => j.obj), host);
      settingsRestored();
      noLeftovers();
    }
    assert.ok(step > 2);
    settingsRestored();
    noLeftovers();
  });

  it('up (persist): the tap outlives the setup process and is an owned object', () => {
    const s = setupInNs(h, 'route', req({ persist: true }), host);
    done(s);
    try {
      assert.deepEqual(s.ep.owned.map((o) => o.kind), ['link', 'route', 'route-uplink']);
      assertJournaled(s, 'route');
      assert.ok(h.links().includes(s.ep.ifname), 'persistent tap survives its fd');
      assert.match(h.ip('route', 'show', GUEST_IP), /dev/);
    } finally {
      releaseInNs(h, 'route', s.ep.owned, host);
    }
    settingsRestored();
    noLeftovers();
  });

  it('a setting that was already on is left on', () => {
    h.exec('sh', '-c', 'echo 1 > /proc/sys/net/ipv4/conf/u0/proxy_arp');
    try {
      const s = setupInNs(h, 'route', req(), host);
      done(s);
      releaseInNs(h, 'route', s.ep.owned, host);
      assert.equal(sysctl('u0', 'proxy_arp'), '1', 'we did not turn it on, so we do not turn it off');
      assert.equal(sysctl('u0', 'forwarding'), '0', 'but what we turned on goes back');
    } finally {
      h.exec('sh', '-c', 'echo 0 > /proc/sys/net/ipv4/conf/u0/proxy_arp');
    }
    noLeftovers();
  });

  it('errors: no guest address, the host own address, an address already routed (rolled back), missing uplink', () => {
    const none = setupFailsInNs(h, 'route', req({ guestIp: undefined }), host);
    assert.equal(none.exitCode, ExitCode.USAGE);
    const v6 = setupFailsInNs(h, 'route', req({ guestIp: 'fd00::5' }), host);
    assert.equal(v6.exitCode, ExitCode.USAGE);
    const own = setupFailsInNs(h, 'route', req({ guestIp: '10.50.0.1' }), host);
    assert.equal(own.exitCode, ExitCode.CONFIG);
    assert.match(own.message, /is an address of this host/);
    const noUp = setupFailsInNs(h, 'route', req({ dev: 'gone0' }), host);
    assert.equal(noUp.exitCode, ExitCode.NOT_FOUND);
    const a = setupInNs(h, 'route', req(), host);
    try {
      const twice = setupFailsInNs(h, 'route', req(), host);
      assert.equal(twice.exitCode, ExitCode.CONFIG);
      assert.match(twice.message, /already is a route for 10\.50\.0\.100\/32/);
      assert.deepEqual(twice.undoFailures, []);
      assert.deepEqual(h.links().sort(), [...baseline, a.ep.ifname].sort(), 'the failed setup left no tap');
    } finally {
      done(a);
      releaseInNs(h, 'route', a.ep.owned, host);
    }
    settingsRestored();
    noLeftovers();
  });
});
