// GSO through the uplink with real peers: a TCG guest that negotiated
// checksum/TSO offloads (QEMU 7.2 defaults) and a host peer behind the uplink
// (a veth end in a test namespace, offloads left on as a host has them).
// TCP both ways must arrive byte-exact (md5 on both ends), and the counters
// must show GSO frames handed to the kernel and taken from it as they are:
// the guest's TSO frames counted gsoPassed (none segmented in software), the
// host's TSO frames counted gsoPassed on the uplink. For `--uplink` (the
// AF_PACKET rings with PACKET_VNET_HDR) and `--br` (our tap on a bridge, with
// IFF_VNET_HDR and TUNSETOFFLOAD).
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
const HOST_IP = '10.4.1.254';
const GUEST_IP = '10.4.1.1';
const KB = 2048;


type Stats = Record<string, number>;

describe('GSO through the uplink: a TCG guest with offloads and a host peer, both ways', { skip }, () => {
  let dir: string;
  before(() => { dir = mkdtempSync(join(tmpdir(), 'qnh-upgso-')); });
  after(() => rmSync(dir, { recursive: true, force: true }));

  const variants = [
    { name: '--uplink (PACKET_VNET_HDR)', kind: 'packet', args: ['--uplink', 'up0'] },
    { name: '--br (IFF_VNET_HDR tap)', kind: 'tap', args: ['--br', 'br0'] },
  ] as const;

  for (const v of variants) {
    it(`${v.name}: TCP byte-exact both ways, GSO frames passed to and from the kernel, none segmented here`, { timeout: 600_000 }, async (t) => {
      await withNetNs(async (ns) => {
        ns.ip('link', 'add', 'up0', 'type', 'veth', 'peer', 'name', 'far0');
        ns.ip('addr', 'add', `${HOST_IP}/24`, 'dev', 'far0');
        for (const l of ['up0', 'far0']) ns.ip('link', 'set', l, 'up');
        if (v.kind === 'tap') {
          ns.addBridge('br0');
          ns.ip('link', 'set', 'up0', 'master', 'br0');
        }
        // far0 keeps its default offloads (tx checksumming, TSO): its stack
        // hands the veth 64 KiB TCP frames with partial checksums.
        const sock = join(dir, `${v.kind}.sock`);
        const ctl = join(dir, `${v.kind}.ctl`);
        const s = new Serve(['--socket', sock, ...v.args, '--control', ctl], ns);
        const hostRx = join(dir, `${v.kind}-host-rx`);
        const hostTx = join(dir, `${v.kind}-host-tx`);
        const hostData = randomBytes(KB * 1024);
        writeFileSync(hostTx, hostData);
        let g: Guest | null = null;
        try {
          await s.ready([sock, ctl]);
          const hold = join(dir, `${v.kind}-hold`);
          const hostListen = nsShell(ns, `mkfifo ${hold} && exec busybox nc -l -p 5001 0<>${hold} > ${hostRx}`);
          g = await startGuest({
            ns, name: `gso-${v.kind}`, timeoutMs: 560_000,
            args: vhostUserNicArgs(sock, { mac: '52:54:00:44:01:01' }),
            settings: { mode: 'serve', ip: `${GUEST_IP}/24`, wait: 540, features: 1, send: `${HOST_IP}:5001`, sendkb: KB, listen: '5002' },
          });
          const guest = g;
          await until(() => guest.has('FEATURES'), 300_000, () => `guest up\n${s.log().slice(-1500)}`);
          t.diagnostic(`guest features ${guest.marker('FEATURES')!.text.trim()} ${texts(guest, 'QNH-OFFLOAD').join('; ')}`);
          // Host -> guest through the uplink (retried until the guest listens).
          let hostSent = -1;
          for (let k = 0; k < 120 && hostSent !== 0; k++) {
            hostSent = await nsShell(ns, `busybox nc ${GUEST_IP} 5002 < ${hostTx}`);
            if (hostSent !== 0) await new Promise((r) => setTimeout(r, 1000));
          }
          assert.equal(hostSent, 0, 'host peer sent to the guest');
          await until(() => texts(guest, 'QNH-TCP-SENT').length === 1 || guest.has('TCP-SEND-FAIL'), 300_000,
            () => `guest sends: ${JSON.stringify(guest.markers.filter((m) => m.name.startsWith('QNH-TCP')))}\n${s.log().slice(-1500)}`);
          assert.equal(guest.has('TCP-SEND-FAIL'), false, texts(guest, 'QNH-TCP-SEND-FAIL').join());
          const received = (): string[] | undefined => texts(guest, 'QNH-TCP-RECEIVED').map((x) => x.split(' ')).find((x) => x[0] === '5002');
          await until(() => !!received(), 120_000, () => `receipts: ${JSON.stringify(texts(guest, 'QNH-TCP-RECEIVED'))}`);
          assert.deepEqual(received()!.slice(1), [md5(hostData), String(hostData.length)], 'host -> guest byte-exact');
          const [sum, bytes] = guest.marker('TCP-DATA')!.text.split(' ');
          assert.equal(bytes, String(KB * 1024));
          assert.equal(await hostListen, 0);
          const got = readFileSync(hostRx);
          assert.equal(got.length, KB * 1024);
          assert.equal(md5(got), sum, 'guest -> host byte-exact');

          const cl = await ControlClient.connect(ctl);
          const list = await cl.request({ op: 'list' });
          cl.close();
          const port = (list.ports as { stats: Stats }[])[0]!.stats;
          const up = (list.uplink as { kind: string; stats: Stats }).stats;
          const pick = (x: Stats): Stats => ({ tx: x.txFrames!, rx: x.rxFrames!, txDropped: x.txDropped!, rxDropped: x.rxDropped!, gsoPassed: x.gsoPassed!, gsoSegmented: x.gsoSegmented!, csumCompleted: x.csumCompleted!, badOffload: x.badOffload! });
          t.diagnostic(`guest port ${JSON.stringify(pick(port))}; uplink ${JSON.stringify(pick(up))}`);
          assert.equal((list.uplink as { kind: string }).kind, v.kind);
          assert.ok(port.gsoPassed! > 0, 'the guest\'s TSO frames went to the kernel as they are');
          assert.equal(port.gsoSegmented, 0, 'nothing segmented in software toward the uplink');
          assert.ok(up.gsoPassed! > 0, 'the host\'s TSO frames came to the guest as they are');
          assert.equal(up.gsoSegmented, 0, 'nothing segmented in software toward a guest that takes TSO');
          assert.equal(port.badOffload, 0);
          assert.equal(up.badOffload, 0);
        } finally {
          await g?.kill();
          await s.stop();
        }
      });
    });
  }
});
