// The README's libvirt recipe for the switch, run as written: a session-mode
// libvirt (a throwaway user's libvirtd in a test namespace) starts two TCG
// domains with `<interface type='vhostuser'>` on two ports of our switch
// (shared memfd memory; virtio-net-pci.vectors=0 through <qemu:commandline>,
// as QEMU 7.2 under TCG crashes with vhost-user and MSI-X); the guests ping
// each other through the switch, and `vhost-user show` sees both ports ready
// with their MACs learned and frames counted.
import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import { chmodSync, chownSync, existsSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, before, describe, it } from 'node:test';
import { ensureGuestImage, guestSkipReason, type GuestImage } from '../lib/guest.js';
import { libvirtSkipReason, startLibvirtSession, type LibvirtSession } from '../lib/libvirt.js';
import { NetNs } from '../lib/netns.js';
import { BIN } from '../lib/paths.js';
import { Serve } from '../lib/serve.js';

const skip = guestSkipReason() ?? libvirtSkipReason() ?? false;
const GUEST_MS = 240_000; // two TCG boots at once on a loaded 2-core machine
const ip = (i: number): string => `10.98.0.${i + 1}`;
const mac = (i: number): string => `52:54:00:98:00:0${i + 1}`;

const xmlEscape = (s: string): string => s.replace(/&/g, '&amp;').replace(/</g, '&lt;').replace(/'/g, '&apos;');

/** The README's recipe: shared memfd memory, the vhostuser interface, vectors=0 for TCG. */
function vhostUserDomain(name: string, image: GuestImage, socket: string, macAddr: string, serial: string, cmdline: string): string {
  return `<domain type='qemu' xmlns:qemu='http://libvirt.org/schemas/domain/qemu/1.0'>
  <name>${name}</name>
  <memory unit='MiB'>256</memory>
  <memoryBacking>
    <source type='memfd'/>
    <access mode='shared'/>
  </memoryBacking>
  <vcpu>1</vcpu>
  <os>
    <type arch='x86_64' machine='pc'>hvm</type>
    <kernel>${xmlEscape(image.kernel)}</kernel>
    <initrd>${xmlEscape(image.initrd)}</initrd>
    <cmdline>${xmlEscape(cmdline)}</cmdline>
  </os>
  <on_poweroff>destroy</on_poweroff>
  <on_reboot>destroy</on_reboot>
  <on_crash>destroy</on_crash>
  <devices>
    <emulator>/usr/bin/qemu-system-x86_64</emulator>
    <interface type='vhostuser'>
      <mac address='${macAddr}'/>
      <source type='unix' path='${xmlEscape(socket)}' mode='client'/>
      <model type='virtio'/>
    </interface>
    <serial type='file'><source path='${xmlEscape(serial)}'/><target port='0'/></serial>
    <controller type='usb' model='none'/>
    <memballoon model='none'/>
  </devices>
  <qemu:commandline>
    <qemu:arg value='-global'/>
    <qemu:arg value='virtio-net-pci.vectors=0'/>
  </qemu:commandline>
</domain>
`;
}

describe('libvirt session mode: <interface type=\'vhostuser\'> on switch ports', { skip }, () => {
  let ns: NetNs;
  let lv: LibvirtSession;
  let image: GuestImage;
  let dir: string;
  let s: Serve;

  before(async () => {
    image = await ensureGuestImage();
    ns = NetNs.create('qnh-vlv');
    dir = mkdtempSync(join(tmpdir(), 'qnh-vlv-'));
    chmodSync(dir, 0o755); // the session user's QEMU reaches the port sockets through it
    lv = await startLibvirtSession(ns, { bridgeHelper: BIN });
  });
  after(async () => {
    await lv?.close();
    await s?.stop();
    ns?.destroy();
    rmSync(dir, { recursive: true, force: true });
  });

  it('two TCG guests on two switch ports reach each other; vhost-user show lists both ports ready with their MACs', { timeout: 600_000 }, async (t) => {
    const t0 = Date.now();
    const socks = [0, 1].map((i) => join(dir, `vm${i}.sock`));
    const ctl = join(dir, 'switch.ctl');
    // The ports belong to the session user, whose QEMU connects to them (anyone else is refused).
    s = new Serve([...socks.flatMap((x) => ['--socket', x]), '--socket-owner', `${lv.uid}:${lv.gid}`, '--control', ctl, '--events'], ns);
    await s.ready([...socks, ctl]);
    const serials = [0, 1].map((i) => join(lv.home, `vm${i}.serial`));
    for (const i of [0, 1]) {
      const xml = join(lv.home, `vm${i}.xml`);
      const cmdline = `console=ttyS0 quiet panic=-1 no_timer_check qnh.mode=serve qnh.ip=${ip(i)}/24 qnh.wait=400 qnh.watch=${ip(1 - i)}`;
      writeFileSync(xml, vhostUserDomain(`vm${i}`, image, socks[i]!, mac(i), serials[i]!, cmdline));
      chownSync(xml, lv.uid, lv.gid);
      const r = lv.virsh('create', xml);
      assert.equal(r.code, 0, `virsh create vm${i} failed: ${r.stderr}\n--- libvirtd ---\n${lv.log()}\n--- switch ---\n${s.log().slice(-2000)}`);
    }
    const serial = (i: number): string => (existsSync(serials[i]!) ? readFileSync(serials[i]!, 'utf8').replace(/\r/g, '') : '');
    const deadline = Date.now() + GUEST_MS;
    const reached = (i: number): boolean => new RegExp(`QNH-REACH-UP ${ip(1 - i).replace(/\./g, '\\.')}\\b`).test(serial(i));
    while (!(reached(0) && reached(1))) {
      if (Date.now() > deadline) assert.fail(`the guests did not reach each other within ${GUEST_MS} ms\n--- vm0 ---\n${serial(0).slice(-1500)}\n--- vm1 ---\n${serial(1).slice(-1500)}\n--- switch ---\n${s.log().slice(-2000)}`);
      await new Promise((r) => setTimeout(r, 300));
    }
    t.diagnostic(`both guests reach each other ${Date.now() - t0} ms after the switch started`);
    for (const p of [0, 1]) await s.waitEvent((e) => e.event === 'ready' && e.port === p);

    const show = spawnSync(process.execPath, [BIN, 'vhost-user', 'show', '--control', ctl], { encoding: 'utf8', timeout: 60_000 });
    assert.equal(show.status, 0, show.stderr);
    for (const l of show.stdout.trimEnd().split('\n')) t.diagnostic(l);
    const rows = show.stdout.split('\n').filter((l) => /^\d /.test(l)).map((l) => l.split(/\s+/));
    assert.deepEqual(rows.map((r) => [r[0], r[1], r[3], r[4], r[8]]), [['0', socks[0], 'veb', 'ready', mac(0)], ['1', socks[1], 'veb', 'ready', mac(1)]]);
    for (const r of rows) assert.ok(Number(r[5]) > 0 && Number(r[6]) > 0, `frames counted both ways: ${r.join(' ')}`);

    for (const i of [0, 1]) assert.equal(lv.virsh('destroy', `vm${i}`).code, 0);
    for (const p of [0, 1]) await s.waitEvent((e) => e.event === 'disconnected' && e.port === p, 60_000);
  });
});
