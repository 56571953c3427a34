// Proves the test guest recipe end to end: QEMU (TCG) boots the Debian
// kernel with our busybox initramfs, and ICMP really crosses a tap on a bridge
// in a throwaway network namespace, in each of the guest's modes. Other data
// path tests build on this, so when it fails, look here first.
import assert from 'node:assert/strict';
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { before, describe, it } from 'node:test';
import { bootGuest, ensureGuestImage, guestSkipReason, startGuest, tapNicArgs, type GuestResult } from '../lib/guest.js';
import { withNetNs, type NetNs } from '../lib/netns.js';

const skip = guestSkipReason() ?? false;

/** br0 with 10.0.0.1/24 and a tap on it for QEMU to open by name. */
function bridgeWithTap(ns: NetNs, tap: string): void {
  ns.addBridge('br0', '10.0.0.1/24');
  ns.ip('tuntap', 'add', tap, 'mode', 'tap');
  ns.ip('link', 'set', tap, 'master', 'br0', 'up');
}

function markerNames(r: GuestResult): string {
  return r.markers.map((m) => m.name).join(' ');
}

describe('test guest boots and passes frames', { skip }, () => {
  let imageMs = 0;
  before(async () => {
    // Built (or reused from .cache/guest) outside the timed boots below.
    const started = Date.now();
    await ensureGuestImage();
    imageMs = Date.now() - started;
  });

  it('ping mode: the guest pings the bridge address through a tap', async (t) => {
    await withNetNs(async (ns) => {
      bridgeWithTap(ns, 'gtap0');
      const r = await bootGuest({
        ns,
        args: tapNicArgs('gtap0'),
        settings: { mode: 'ping', ip: '10.0.0.2/24', peer: '10.0.0.1', count: 3 },
      });
      const ok = r.markers.find((m) => m.name === 'QNH-PING-OK');
      assert.ok(ok, `no QNH-PING-OK; markers: ${markerNames(r)}\n${r.output}\n${r.stderr}`);
      assert.match(ok.text, /^10\.0\.0\.1 [1-3]\/3$/);
      assert.ok(r.markers.some((m) => m.name === 'QNH-DONE'));
      assert.equal(r.exitCode, 0, 'the guest reboots, which ends QEMU (-no-reboot) with 0');
      const ready = r.markers.find((m) => m.name === 'QNH-READY')!;
      t.diagnostic(`image ${imageMs} ms; spawn->READY ${ready.atMs} ms (guest uptime ${ready.guestTime} s), spawn->PING-OK ${ok.atMs} ms, ` +
        `spawn->exit ${r.elapsedMs} ms`);
    });
  });

  it('serve mode: the host pings the guest, which stays up until killed', async (t) => {
    await withNetNs(async (ns) => {
      bridgeWithTap(ns, 'gtap0');
      const g = await startGuest({
        ns,
        name: 'server',
        args: tapNicArgs('gtap0', { mac: '52:54:00:00:00:22' }),
        settings: { mode: 'serve', ip: '10.0.0.2/24', wait: 60 },
      });
      try {
        const ready = await g.waitFor('READY');
        assert.match(ready.text, /^eth0 10\.0\.0\.2\/24 52:54:00:00:00:22$/);
        // The host has no iputils here; busybox (needed for the guest anyway) pings.
        const out = ns.exec('busybox', 'ping', '-c', '3', '-i', '0.2', '-w', '10', '10.0.0.2');
        assert.match(out, / [1-3] packets received/, out);
        assert.equal(g.has('DONE'), false, 'a serving guest must still be up');
        t.diagnostic(`spawn->READY ${ready.atMs} ms`);
      } finally {
        await g.kill();
      }
    });
  });

  it('dhcp mode: the guest leases from udhcpd in the namespace and pings the router', async (t) => {
    const dir = mkdtempSync(join(tmpdir(), 'qnh-udhcpd-'));
    try {
      await withNetNs(async (ns) => {
        bridgeWithTap(ns, 'gtap0');
        writeFileSync(join(dir, 'udhcpd.conf'), [
          'start 10.0.0.100', 'end 10.0.0.110', 'interface br0', 'max_leases 10',
          `lease_file ${join(dir, 'leases')}`, `pidfile ${join(dir, 'pid')}`,
          'option subnet 255.255.255.0', 'option router 10.0.0.1', '',
        ].join('\n'));
        writeFileSync(join(dir, 'leases'), '');
        // Runs inside the namespace, so removing the namespace ends it too.
        const udhcpd = ns.spawn('busybox', ['udhcpd', '-f', join(dir, 'udhcpd.conf')], { stdio: 'ignore' });
        try {
          const r = await bootGuest({ ns, args: tapNicArgs('gtap0'), settings: { mode: 'dhcp' } });
          const lease = r.markers.find((m) => m.name === 'QNH-DHCP-OK');
          assert.ok(lease, `no QNH-DHCP-OK; markers: ${markerNames(r)}\n${r.output}`);
          assert.match(lease.text, /^10\.0\.0\.1(0\d|10)$/);
          const ok = r.markers.find((m) => m.name === 'QNH-PING-OK');
          assert.ok(ok, `no QNH-PING-OK; markers: ${markerNames(r)}\n${r.output}`);
          assert.match(ok.text, /^10\.0\.0\.1 /, 'peer defaults to the lease router');
          t.diagnostic(`spawn->DHCP-OK ${lease.atMs} ms, spawn->PING-OK ${ok.atMs} ms`);
        } finally {
          udhcpd.kill('SIGKILL');
        }
      });
    } finally {
      rmSync(dir, { recursive: true, force: true });
    }
  });

  it('a guest that cannot reach its peer reports QNH-PING-FAIL and still exits', async () => {
    await withNetNs(async (ns) => {
      bridgeWithTap(ns, 'gtap0');
      const r = await bootGuest({
        ns,
        args: tapNicArgs('gtap0'),
        // Nobody owns 10.0.0.9: ARP goes unanswered, nothing leaves the namespace.
        settings: { ip: '10.0.0.2/24', peer: '10.0.0.9', count: 2, deadline: 2 },
      });
      assert.ok(r.markers.some((m) => m.name === 'QNH-PING-FAIL'), markerNames(r));
      assert.ok(!r.markers.some((m) => m.name === 'QNH-PING-OK'));
      assert.equal(r.exitCode, 0);
    });
  });
});
