// virtio-net offloads end to end with real peers: three TCG guests on the
// switch, two negotiating checksum/TSO offloads (QEMU 7.2 defaults) and one
// with them turned off on its virtio-net-pci device, plus a host peer behind
// the uplink (a veth in a test namespace). TCP transfers (busybox nc) between
// them must arrive byte-exact (md5 on both ends), and the switch's counters
// must show GSO frames passed through (offload guest to offload guest, and
// to the kernel through the uplink) and segmented in software (toward the
// guest without offloads).
import assert from 'node:assert/strict';
import { randomBytes } from 'node:crypto';
import { mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, before, describe, it } from 'node:test';
import { ControlClient } from '../lib/control-client.js';
import { guestSkipReason, markerTexts as texts, md5, startGuest, vhostUserNicArgs, type Guest } from '../lib/guest.js';
import { withNetNs, nsShell } from '../lib/netns.js';
import { until } from '../lib/wait.js';
import { Serve } from '../lib/serve.js';

const skip = guestSkipReason() ?? false;
const HOST_IP = '10.4.0.254';
const ip = (i: number): string => `10.4.0.${i + 1}`;
const mac = (i: number): string => `52:54:00:44:00:0${i + 1}`;
const NO_OFFLOADS = 'csum=off,guest_csum=off,host_tso4=off,host_tso6=off,host_ecn=off,guest_tso4=off,guest_tso6=off,guest_ecn=off,host_ufo=off,guest_ufo=off';
// virtio-net feature bits that must read 1 with offloads and 0 without (sysfs string, bit 0 first).
const OFFLOAD_BITS = { CSUM: 0, GUEST_CSUM: 1, GUEST_TSO4: 7, GUEST_TSO6: 8, HOST_TSO4: 11, HOST_TSO6: 12 };
const KB = 2048;


describe('offloads end to end: TCG guests and a host peer on the switch', { skip }, () => {
  let dir: string;
  before(() => { dir = mkdtempSync(join(tmpdir(), 'qnh-off-')); });
  after(() => rmSync(dir, { recursive: true, force: true }));

  it('TCP between offload guests passes GSO frames; to a guest without offloads and to the uplink it is segmented; all byte-exact', { timeout: 600_000 }, async (t) => {
    await withNetNs(async (ns) => {
      ns.ip('link', 'add', 'up0', 'type', 'veth', 'peer', 'name', 'far0');
      ns.ip('addr', 'add', `${HOST_IP}/24`, 'dev', 'far0');
      ns.ip('link', 'set', 'far0', 'up');
      ns.ip('link', 'set', 'up0', 'up');
      // far0 keeps its offloads on: the uplink takes and gives vnet headers.
      const socks = [0, 1, 2].map((i) => join(dir, `g${i}.sock`));
      const ctl = join(dir, 'ctl.sock');
      const s = new Serve([...socks.flatMap((x) => ['--socket', x]), '--uplink', 'up0', '--control', ctl], ns);
      const hostRx = join(dir, 'host-rx');
      const hostTx = join(dir, 'host-tx');
      const hostData = randomBytes(KB * 1024);
      writeFileSync(hostTx, hostData);
      const guests: Guest[] = [];
      try {
        await s.ready([...socks, ctl]);
        // Host listener first (guest 0 sends to it); stdin a FIFO held open, as in the guest.
        const hostListen = nsShell(ns, `mkfifo ${dir}/hold && exec busybox nc -l -p 5001 0<>${dir}/hold > ${hostRx}`);
        const settings = [
          { send: `${ip(1)}:5001,${ip(2)}:5001,${HOST_IP}:5001`, sendkb: KB },
          { listen: '5001,5002' },
          { listen: '5001' },
        ];
        for (let i = 0; i < 3; i++) {
          guests.push(await startGuest({
            ns, name: `g${i}`, timeoutMs: 560_000,
            args: vhostUserNicArgs(socks[i]!, { mac: mac(i), ...(i === 2 ? { device: NO_OFFLOADS } : {}) }),
            settings: { mode: 'serve', ip: `${ip(i)}/24`, wait: 540, features: 1, ...settings[i] },
          }));
        }
        const [g0, g1, g2] = guests as [Guest, Guest, Guest];
        await until(() => guests.every((g) => g.has('FEATURES')), 300_000, () => `guests up\n${s.log().slice(-1500)}`);
        for (const [i, g] of guests.entries()) {
          const bits = g.marker('FEATURES')!.text.trim();
          t.diagnostic(`guest ${i} features ${bits} ${texts(g, 'QNH-OFFLOAD').join('; ')}`);
          for (const [name, b] of Object.entries(OFFLOAD_BITS)) assert.equal(bits[b], i === 2 ? '0' : '1', `guest ${i} ${name}`);
        }
        // Host -> guest 1 through the uplink.
        let hostSent = -1;
        for (let k = 0; k < 120 && hostSent !== 0; k++) {
          hostSent = await nsShell(ns, `busybox nc ${ip(1)} 5002 < ${hostTx}`);
          if (hostSent !== 0) await new Promise((r) => setTimeout(r, 1000));
        }
        assert.equal(hostSent, 0, 'host peer sent to guest 1');
        const received = (g: Guest, port: number): string[] | undefined => texts(g, 'QNH-TCP-RECEIVED').map((x) => x.split(' ')).find((x) => x[0] === String(port));
        await until(() => texts(g0, 'QNH-TCP-SENT').length === 3 || g0.has('TCP-SEND-FAIL'), 300_000,
          () => `guest 0 sends: ${JSON.stringify(g0.markers.filter((m) => m.name.startsWith('QNH-TCP')))}\n${s.log().slice(-1500)}`);
        assert.equal(g0.has('TCP-SEND-FAIL'), false, texts(g0, 'QNH-TCP-SEND-FAIL').join());
        await until(() => !!received(g1, 5001) && !!received(g1, 5002) && !!received(g2, 5001), 120_000,
          () => `receipts: ${JSON.stringify(guests.map((g) => texts(g, 'QNH-TCP-RECEIVED')))}`);
        const [sum, bytes] = g0.marker('TCP-DATA')!.text.split(' ');
        assert.equal(bytes, String(KB * 1024));
        assert.deepEqual(received(g1, 5001)!.slice(1), [sum, bytes], 'guest 0 -> guest 1 (offloads both ends) byte-exact');
        assert.deepEqual(received(g2, 5001)!.slice(1), [sum, bytes], 'guest 0 -> guest 2 (no offloads) byte-exact');
        assert.deepEqual(received(g1, 5002)!.slice(1), [md5(hostData), String(hostData.length)], 'host -> guest 1 through the uplink byte-exact');
        assert.equal(await hostListen, 0);
        const got = readFileSync(hostRx);
        assert.equal(got.length, KB * 1024);
        assert.equal(md5(got), sum, 'guest 0 -> host through the uplink byte-exact');

        const cl = await ControlClient.connect(ctl);
        const list = await cl.request({ op: 'list' });
        cl.close();
        const st = (list.ports as { stats: Record<string, number> }[]).map((p) => p.stats);
        t.diagnostic(`port stats: ${JSON.stringify(st.map((x) => ({ tx: x.txFrames, rx: x.rxFrames, gsoPassed: x.gsoPassed, gsoSegmented: x.gsoSegmented, csumCompleted: x.csumCompleted, badOffload: x.badOffload })))}`);
        assert.ok(st[0]!.gsoPassed! > 0, 'GSO frames from guest 0 passed through to guest 1');
        assert.ok(st[0]!.gsoSegmented! > 0, 'GSO frames from guest 0 segmented for guest 2');
        assert.equal(st[2]!.gsoPassed! + st[2]!.gsoSegmented! + st[2]!.csumCompleted!, 0, 'guest 2 sends no offloads');
        for (const x of st) assert.equal(x.badOffload, 0);
      } finally {
        for (const g of guests) await g.kill();
        await s.stop();
      }
    });
  });
});
