// QEMU guests on our vhost-user back-end: one reaching a bridge through the
// back-end's tap, and two pinging each other through the patched ports.
import assert from 'node:assert/strict';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, before, describe, it } from 'node:test';
import { bootGuest, guestSkipReason, startGuest, vhostUserNicArgs } from '../lib/guest.js';
import { withNetNs } from '../lib/netns.js';
import { Serve } from '../lib/serve.js';

const skip = guestSkipReason() ?? false;

describe('QEMU guests on the vhost-user back-end', { skip }, () => {
  let dir: string;
  before(() => { dir = mkdtempSync(join(tmpdir(), 'qnh-vuq-')); });
  after(() => rmSync(dir, { recursive: true, force: true }));

  it('--br: a guest pings an address on the bridge', async (t) => {
    await withNetNs(async (ns) => {
      ns.addBridge('br0', '10.0.0.1/24');
      const sock = join(dir, 'br.sock');
      const s = new Serve(['--socket', sock, '--br', 'br0'], ns);
      try {
        await s.ready([sock]);
        const r = await bootGuest({ ns, args: vhostUserNicArgs(sock), settings: { mode: 'ping', ip: '10.0.0.2/24', peer: '10.0.0.1', count: 3 } });
        const ok = r.markers.find((m) => m.name === 'QNH-PING-OK');
        assert.ok(ok, `no QNH-PING-OK: ${r.markers.map((m) => m.name).join(' ')}\n${r.output.slice(-3000)}\n${r.stderr}\n${s.log()}`);
        t.diagnostic(`spawn->PING-OK ${ok.atMs} ms`);
      } finally {
        const { final } = await s.stop();
        assert.ok(final.length === 1, s.log());
      }
      // The back-end's tap is gone with it.
      assert.deepEqual(ns.links().sort(), ['br0', 'lo']);
    });
  });

  it('two guests on the two patched ports ping each other', async (t) => {
    const a = join(dir, 'a.sock');
    const b = join(dir, 'b.sock');
    const s = new Serve(['--socket', a, '--socket', b]);
    try {
      await s.ready([a, b]);
      const server = await startGuest({ name: 'server', args: vhostUserNicArgs(a, { mac: '52:54:00:00:00:0a' }), settings: { mode: 'serve', ip: '10.1.0.1/24', wait: 60 } });
      try {
        await server.waitFor('READY', 60000);
        const r = await bootGuest({ name: 'client', args: vhostUserNicArgs(b, { mac: '52:54:00:00:00:0b' }), settings: { mode: 'ping', ip: '10.1.0.2/24', peer: '10.1.0.1', count: 3 } });
        const ok = r.markers.find((m) => m.name === 'QNH-PING-OK');
        assert.ok(ok, `no QNH-PING-OK: ${r.markers.map((m) => m.name).join(' ')}\n${r.output.slice(-3000)}\n${s.log()}`);
        t.diagnostic(`client spawn->PING-OK ${ok.atMs} ms`);
      } finally {
        await server.kill();
      }
    } finally {
      await s.stop();
    }
  });
});

describe('vhost-user --client against a listening QEMU', { skip }, () => {
  it('connects to QEMU (server=on), retrying until it appears; the guest pings the bridge', async (t) => {
    const dir = mkdtempSync(join(tmpdir(), 'qnh-vuc-'));
    try {
      await withNetNs(async (ns) => {
        ns.addBridge('br0', '10.0.0.1/24');
        const sock = join(dir, 'qemu.sock');
        // The back-end starts first and keeps retrying: QEMU is not there yet.
        const s = new Serve(['--socket', sock, '--br', 'br0', '--client', '--events'], ns);
        try {
          await s.waitLog(/serving 1 port/);
          const r = await bootGuest({ ns, args: vhostUserNicArgs(sock, { server: true }), settings: { mode: 'ping', ip: '10.0.0.2/24', peer: '10.0.0.1', count: 3 } });
          const ok = r.markers.find((m) => m.name === 'QNH-PING-OK');
          assert.ok(ok, `no QNH-PING-OK: ${r.markers.map((m) => m.name).join(' ')}\n${r.output.slice(-2000)}\n${r.stderr}\n${s.log()}`);
          t.diagnostic(`spawn->PING-OK ${ok.atMs} ms`);
          assert.match(s.log(), /front-end connected/);
          // The management events of the --client side, in order.
          assert.deepEqual(s.events.filter((e) => e.port === 0 && e.event !== 'mac-learned').map((e) => e.event).slice(0, 3), ['port-added', 'connected', 'ready']);
          assert.ok(s.events.some((e) => e.event === 'mac-learned' && e.port === 0), JSON.stringify(s.events));
        } finally {
          await s.stop();
        }
      });
    } finally {
      rmSync(dir, { recursive: true, force: true });
    }
  });
});

describe('vhost-user back-end restart', { skip }, () => {
  it('QEMU (reconnect=1) replays the setup to a new back-end and traffic resumes', async (t) => {
    const dir = mkdtempSync(join(tmpdir(), 'qnh-vur-'));
    try {
      await withNetNs(async (ns) => {
        ns.addBridge('br0', '10.0.0.1/24');
        const sock = join(dir, 'r.sock');
        let s = new Serve(['--socket', sock, '--br', 'br0'], ns);
        await s.ready([sock]);
        const g = await startGuest({ ns, name: 'server', args: vhostUserNicArgs(sock, { reconnect: 1 }), settings: { mode: 'serve', ip: '10.0.0.2/24', wait: 90 } });
        try {
          await g.waitFor('READY', 60000);
          const ping = (): string => ns.exec('busybox', 'ping', '-c', '3', '-i', '0.3', '-w', '15', '10.0.0.2');
          assert.match(ping(), / [1-3] packets received/);
          // Kill the back-end outright: no clean shutdown, rings mid-flight.
          s.proc.kill('SIGKILL');
          await s.exited;
          const t0 = Date.now();
          s = new Serve(['--socket', sock, '--br', 'br0'], ns);
          await s.ready([sock]);
          assert.ok(await s.waitLog(/front-end connected/, 15000), `QEMU did not reconnect: ${s.log()}`);
          assert.match(ping(), / [1-3] packets received/);
          t.diagnostic(`traffic back ${Date.now() - t0} ms after the new back-end started`);
        } finally {
          await g.kill();
          await s.stop();
        }
      });
    } finally {
      rmSync(dir, { recursive: true, force: true });
    }
  });
});
