// Three TCG guests on three ports of the vhost-user switch, one set of boots
// for all three modes (switched at run time through the control socket):
// - veb: every guest reaches the other two and the uplink;
// - private: guests no longer reach each other, even though the outside
//   bridge hairpins, but still reach the uplink;
// - vepa: guest-to-guest frames leave through the uplink (seen on the wire)
//   and come back through the outside bridge's hairpin.
// The uplink is a veth whose far end sits on a bridge with hairpin on, in a
// test namespace, with the address the guests ping.
import assert from 'node:assert/strict';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, before, describe, it } from 'node:test';
import { ControlClient } from '../lib/control-client.js';
import { guestSkipReason, startGuest, vhostUserNicArgs, type Guest } from '../lib/guest.js';
import { withNetNs } from '../lib/netns.js';
import { until } from '../lib/wait.js';
import { PacketPeer } from '../lib/packet-peer.js';
import { Serve } from '../lib/serve.js';
import { macBytes } from '../lib/switch-guests.js';

const skip = guestSkipReason() ?? false;
const UPLINK_IP = '10.3.0.254';
const ip = (i: number): string => `10.3.0.${i + 1}`;
const mac = (i: number): string => `52:54:00:33:00:0${i + 1}`;

/** Waits until `cond` holds, failing with `what()` after timeoutMs. */
function reachTable(gs: Guest[]): string {
  return gs.map((g, i) => `${ip(i)}: ${[...gs.keys()].filter((j) => j !== i).map((j) => `${ip(j)}=${g.reach(ip(j))}`).join(' ')} uplink=${g.reach(UPLINK_IP)}`).join('\n');
}

describe('three TCG guests on the vhost-user switch', { skip }, () => {
  let dir: string;
  before(() => { dir = mkdtempSync(join(tmpdir(), 'qnh-swq-')); });
  after(() => rmSync(dir, { recursive: true, force: true }));

  it('veb: all reach each other; private: only the uplink; vepa: through the outside hairpin, seen on the uplink', { timeout: 400_000 }, async (t) => {
    await withNetNs(async (ns) => {
      ns.ip('link', 'add', 'up0', 'type', 'veth', 'peer', 'name', 'far0');
      ns.addBridge('br0', `${UPLINK_IP}/24`);
      ns.ip('link', 'set', 'far0', 'master', 'br0');
      ns.ip('link', 'set', 'far0', 'type', 'bridge_slave', 'hairpin', 'on');
      ns.ip('link', 'set', 'far0', 'up');
      ns.ip('link', 'set', 'up0', 'up');
      const socks = [0, 1, 2].map((i) => join(dir, `g${i}.sock`));
      const ctl = join(dir, 'ctl.sock');
      const s = new Serve([...socks.flatMap((x) => ['--socket', x]), '--uplink', 'up0', '--control', ctl, '--events'], ns);
      const peer = new PacketPeer(ns, 'far0');
      const guests: Guest[] = [];
      const t0 = Date.now();
      try {
        await Promise.all([s.ready([...socks, ctl]), peer.started()]);
        for (let i = 0; i < 3; i++) {
          const others = [0, 1, 2].filter((j) => j !== i).map(ip);
          guests.push(await startGuest({
            ns, name: `g${i}`, timeoutMs: 380_000, args: vhostUserNicArgs(socks[i]!, { mac: mac(i) }),
            settings: { mode: 'serve', ip: `${ip(i)}/24`, wait: 370, watch: [...others, UPLINK_IP].join(',') },
          }));
        }
        const allUp = (): boolean => guests.every((g, i) => [0, 1, 2].every((j) => j === i || g.reach(ip(j)) === 'up') && g.reach(UPLINK_IP) === 'up');
        await until(allUp, 180_000, () => `veb: everyone reaches everyone\n${reachTable(guests)}\n${s.log().slice(-1500)}`);
        t.diagnostic(`veb: all 9 paths up ${Date.now() - t0} ms after the first boot`);
        for (let p = 0; p < 3; p++) {
          const names = s.events.filter((e) => e.port === p && e.event !== 'mac-learned').map((e) => e.event);
          assert.deepEqual(names.slice(0, 3), ['port-added', 'connected', 'ready'], `port ${p} events`);
          assert.ok(s.events.some((e) => e.event === 'mac-learned' && e.port === p && e.mac === mac(p)), `MAC of guest ${p} learned on port ${p}`);
        }

        const cl = await ControlClient.connect(ctl);
        const setAll = async (mode: string): Promise<void> => {
          for (let p = 0; p < 3; p++) assert.deepEqual(await cl.request({ op: 'set-mode', port: p, mode }), { ok: true, port: p, mode });
        };
        await setAll('private');
        const privateOk = (): boolean => guests.every((g, i) => [0, 1, 2].every((j) => j === i || g.reach(ip(j)) === 'down'));
        await until(privateOk, 60_000, () => `private: guests cut off from each other\n${reachTable(guests)}`);
        assert.ok(guests.every((g) => g.reach(UPLINK_IP) === 'up'), `private: the uplink still reachable\n${reachTable(guests)}`);
        assert.match(ns.exec('busybox', 'ping', '-c', '2', '-i', '0.3', '-W', '5', ip(1)), / 2 packets received/, 'the uplink side reaches a private port');
        t.diagnostic('private: guests cut off, uplink reachable');

        const mark = peer.frames.length;
        await setAll('vepa');
        await until(allUp, 60_000, () => `vepa: everyone reaches everyone through the hairpin\n${reachTable(guests)}`);
        // Echo requests between guest 0 and guest 1 crossed the uplink wire.
        const [m0, m1] = [Buffer.from(macBytes(mac(0))), Buffer.from(macBytes(mac(1)))];
        const between = peer.frames.slice(mark).filter((f) => f.length > 34 && f.readUInt16BE(12) === 0x0800 && f[23] === 1
          && ((f.subarray(6, 12).equals(m0) && f.subarray(0, 6).equals(m1)) || (f.subarray(6, 12).equals(m1) && f.subarray(0, 6).equals(m0))));
        assert.ok(between.length > 0, `vepa: ICMP between guests 0 and 1 seen on the uplink (${peer.frames.length - mark} frames seen)`);
        t.diagnostic(`vepa: ${between.length} ICMP frames between guests 0 and 1 on the uplink`);
        cl.close();
      } finally {
        for (const g of guests) await g.kill();
        peer.stop();
        await s.stop();
      }
    });
  });
});
