// Real libvirt session mode (a non-root user's `virsh -c qemu:///session`)
// with our helper as bridge_helper: the helper libvirtd runs has no
// CAP_NET_ADMIN, so it asks our broker; a TCG guest gets a tap on br0 and
// pings the bridge; a denied bridge shows our message in libvirt's error.
import assert from 'node:assert/strict';
import { chownSync, existsSync, readFileSync, statSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { after, before, describe, it } from 'node:test';
import { startTestBroker, type BrokerRun } from '../lib/broker.js';
import { ensureGuestImage, guestSkipReason, type GuestImage } from '../lib/guest.js';
import { libvirtSkipReason, startLibvirtSession, type LibvirtSession } from '../lib/libvirt.js';
import { NetNs } from '../lib/netns.js';
import { BIN } from '../lib/paths.js';
import { macvtapsHeldBy, tapsHeldBy } from '../lib/qemu.js';
import { eventually } from '../lib/wait.js';

const skip = guestSkipReason() ?? libvirtSkipReason() ?? false;
const MAC = '52:54:00:7b:02:03';
const GUEST_MS = 180_000; // TCG boot is ~5-15 s; a loaded 2-core machine can be much slower

const xmlEscape = (s: string): string => s.replace(/&/g, '&amp;').replace(/</g, '&lt;').replace(/'/g, '&apos;');

function domainXml(name: string, image: GuestImage, bridge: string, serial: string, cmdline: string, mac?: string, onReboot: 'destroy' | 'restart' = 'destroy'): string {
  return `<domain type='qemu'>
  <name>${name}</name>
  <memory unit='MiB'>256</memory>
  <vcpu>1</vcpu>
  <os>
    <type arch='x86_64' machine='pc'>hvm</type>
    <kernel>${xmlEscape(image.kernel)}</kernel>
    <initrd>${xmlEscape(image.initrd)}</initrd>
    <cmdline>${xmlEscape(cmdline)}</cmdline>
  </os>
  <features><acpi/></features>
  <on_poweroff>destroy</on_poweroff>
  <on_reboot>${onReboot}</on_reboot>
  <on_crash>destroy</on_crash>
  <devices>
    <emulator>/usr/bin/qemu-system-x86_64</emulator>
    <interface type='bridge'>
      <source bridge='${bridge}'/>${mac ? `\n      <mac address='${mac}'/>` : ''}
      <model type='virtio'/>
    </interface>
    <serial type='file'><source path='${xmlEscape(serial)}'/><target port='0'/></serial>
    <controller type='usb' model='none'/>
    <memballoon model='none'/>
  </devices>
</domain>
`;
}

/** The guest's serial console (a file QEMU writes) and a poll for a marker on it. */
function serialOf(serial: string): { serialText: () => string; waitFor: (re: RegExp) => Promise<string> } {
  const serialText = (): string => (existsSync(serial) ? readFileSync(serial, 'utf8').replace(/\r/g, '') : '');
  const waitFor = async (re: RegExp): Promise<string> => {
    const deadline = Date.now() + GUEST_MS;
    for (;;) {
      const m = re.exec(serialText());
      if (m) return m[0];
      if (Date.now() > deadline) assert.fail(`no ${re} on the guest's console within ${GUEST_MS} ms:\n${serialText().split('\n').slice(-30).join('\n')}`);
      await new Promise((res) => setTimeout(res, 200));
    }
  };
  return { serialText, waitFor };
}

describe('libvirt session mode: bridge_helper through the broker', { skip }, () => {
  let ns: NetNs;
  let broker: BrokerRun;
  let lv: LibvirtSession;
  let image: GuestImage;
  const started = Date.now();

  before(async () => {
    image = await ensureGuestImage();
    ns = NetNs.create('qnh-blv');
    ns.addBridge('br0', '10.97.0.1/24');
    ns.addBridge('brdeny');
    // The uplink of the macvtap profile and, on its other end, the guest's peer.
    ns.ip('link', 'add', 'veth0', 'type', 'veth', 'peer', 'name', 'veth1');
    ns.ip('addr', 'add', '10.96.0.1/24', 'dev', 'veth1');
    ns.ip('link', 'set', 'veth0', 'up');
    ns.ip('link', 'set', 'veth1', 'up');
    broker = await startTestBroker(ns, {
      acl: 'allow br0\ndeny brdeny\nallow profile:lan\nallow mode:vepa\nallow dev:veth0\n',
      profiles: { lan: { mode: 'vepa', dev: 'veth0', mac: MAC } },
    });
    lv = await startLibvirtSession(ns, { bridgeHelper: BIN, env: { QEMU_NET_HELPER_BROKER: broker.socket } });
  });
  after(async () => {
    await lv?.close();
    await broker?.stop();
    ns?.destroy();
    process.stderr.write(`# broker-libvirt: ${Date.now() - started} ms in all\n`);
  });

  it('virsh create starts a TCG guest on br0 whose QEMU holds our tap; the guest pings the bridge; virsh attach-interface hotplugs a second', async () => {
    const t0 = Date.now();
    const serial = join(lv.home, 'guest1.serial');
    const xml = join(lv.home, 'guest1.xml');
    writeFileSync(xml, domainXml('guest1', image, 'br0', serial, 'console=ttyS0 quiet panic=-1 qnh.ip=10.97.0.2/24 qnh.peer=10.97.0.1 qnh.count=10 qnh.interval=0.2', undefined, 'restart'));
    chownSync(xml, lv.uid, lv.gid);
    const r = lv.virsh('create', xml);
    assert.equal(r.code, 0, `virsh create failed: ${r.stderr}\n--- libvirtd ---\n${lv.log()}\n--- broker ---\n${broker.lines().join('\n')}`);
    const { serialText, waitFor } = serialOf(serial);
    const tCreated = Date.now();
    await waitFor(/QNH-READY .*/);
    const tReady = Date.now();
    // While the guest pings: QEMU (the user's, in the namespace) holds a tap on br0.
    const pid = lv.qemuPid('guest1');
    assert.ok(pid, 'libvirt wrote the QEMU pid file');
    assert.equal(statSync(`/proc/${pid}`).uid, lv.uid, 'QEMU runs as the session user');
    const taps = tapsHeldBy(pid!);
    assert.equal(taps.length, 1, `QEMU holds one tap, holds ${JSON.stringify(taps)}`);
    const d = ns.linkDetails(taps[0]!) as { master?: string; linkinfo: { info_kind: string; info_data: { type: string } } };
    assert.equal(d.master, 'br0');
    assert.equal(d.linkinfo.info_data.type, 'tap');
    const ok = await waitFor(/QNH-PING-(OK|FAIL) .*/);
    assert.match(ok, /^QNH-PING-OK 10\.97\.0\.1 (\d+)\/10/, serialText());
    // on_reboot=restart keeps the domain (the same QEMU) after the guest's reboot: hotplug a second NIC.
    const ar = lv.virsh('attach-interface', 'guest1', 'bridge', 'br0', '--model', 'virtio');
    assert.equal(ar.code, 0, `virsh attach-interface failed: ${ar.stderr}\n--- broker ---\n${broker.lines().join('\n')}`);
    const both = tapsHeldBy(pid!);
    assert.equal(both.length, 2, `after hotplug QEMU holds two taps, holds ${JSON.stringify(both)}`);
    for (const t of both) assert.equal((ns.linkDetails(t) as { master?: string }).master, 'br0');
    const dr = lv.virsh('destroy', 'guest1');
    assert.equal(dr.code, 0, dr.stderr);
    await eventually('the domain is gone', () => lv.virsh('list', '--name').stdout.trim() === '', 60_000, 300);
    await eventually('the taps are gone with QEMU', () => !both.some((t) => ns.links().includes(t)), 10_000);
    const tEnd = Date.now();
    // virsh ran synchronously: the broker's lines may still sit in the pipe.
    const br0Decisions = (): string[] => broker.decisions().filter((l) => /--br=br0/.test(l));
    await eventually(`two decisions for br0 in the broker's log:\n${broker.lines().join('\n')}`, () => br0Decisions().length >= 2, 10_000);
    const decisions = br0Decisions();
    assert.equal(decisions.length, 2, broker.lines().join('\n'));
    for (const [i, t] of [taps[0]!, both.find((x) => x !== taps[0])!].entries()) {
      assert.match(decisions[i]!, new RegExp(`^broker: uid=${lv.uid} pid=\\d+ comm=\\S+: helper --use-vnet --br=br0 --fd=\\d+: allowed: bridge bridge/tap ${t}$`));
    }
    process.stderr.write(`# libvirt guest ping: ${Date.now() - t0} ms (virsh create ${tCreated - t0}, to READY ${tReady - tCreated}, to domain end ${tEnd - tReady})\n`);
  });

  it('<source bridge=\'lan\'/> with a profile lan: a VEPA macvtap on veth0; the guest pings veth0\'s peer; the broker removes the macvtap after the domain ends', async () => {
    const t0 = Date.now();
    const serial = join(lv.home, 'guest3.serial');
    const xml = join(lv.home, 'guest3.xml');
    writeFileSync(xml, domainXml('guest3', image, 'lan', serial, 'console=ttyS0 quiet panic=-1 qnh.ip=10.96.0.2/24 qnh.peer=10.96.0.1 qnh.count=10 qnh.interval=0.2', MAC));
    chownSync(xml, lv.uid, lv.gid);
    const r = lv.virsh('create', xml);
    assert.equal(r.code, 0, `virsh create failed: ${r.stderr}\n--- libvirtd ---\n${lv.log()}\n--- broker ---\n${broker.lines().join('\n')}`);
    const { serialText, waitFor } = serialOf(serial);
    await waitFor(/QNH-READY .*/);
    const pid = lv.qemuPid('guest3');
    assert.ok(pid, 'libvirt wrote the QEMU pid file');
    const held = macvtapsHeldBy(ns, pid!);
    assert.equal(held.length, 1, `QEMU holds one macvtap, holds ${JSON.stringify(held)}`);
    const d = ns.linkDetails(held[0]!) as { address: string; link?: string; linkinfo: { info_kind: string; info_data: { mode: string } } };
    assert.equal(d.linkinfo.info_kind, 'macvtap');
    assert.equal(d.linkinfo.info_data.mode, 'vepa');
    assert.equal(d.link, 'veth0');
    assert.equal(d.address, MAC);
    const ok = await waitFor(/QNH-PING-(OK|FAIL) .*/);
    assert.match(ok, /^QNH-PING-OK 10\.96\.0\.1 (\d+)\/10/, serialText());
    lv.virsh('destroy', 'guest3');
    await eventually('the domain is gone', () => lv.virsh('list', '--name').stdout.trim() === '', 60_000, 300);
    // libvirtd, not QEMU, was the helper's caller and outlives the guest: the broker must follow the fd to QEMU.
    await eventually('the broker removes the macvtap after QEMU quit', () => !ns.links().some((l) => l.startsWith('macvtap')), 20_000, 200);
    await broker.waitForLine(new RegExp(`^broker: uid=${lv.uid} pid=\\d+ comm=\\S+: helper --use-vnet --br=lan --fd=\\d+: allowed: vepa macvtap/macvtap ${held[0]}`));
    process.stderr.write(`# libvirt macvtap profile: ${Date.now() - t0} ms\n`);
  });

  it('a denied bridge: virsh create fails with our message naming bridge, file and rule', async () => {
    const t0 = Date.now();
    const xml = join(lv.home, 'guest2.xml');
    writeFileSync(xml, domainXml('guest2', image, 'brdeny', join(lv.home, 'guest2.serial'), 'console=ttyS0 quiet panic=-1'));
    chownSync(xml, lv.uid, lv.gid);
    const r = lv.virsh('create', xml);
    assert.notEqual(r.code, 0);
    assert.match(r.stderr, /failed to communicate with bridge helper: stderr=qemu-net-helper: access denied: bridge 'brdeny' is refused by rule 'deny brdeny' at .*bridge\.conf:2/, r.stderr);
    assert.equal(lv.virsh('list', '--name').stdout.trim(), '', 'no domain left running');
    assert.ok(!ns.links().some((l) => l.startsWith('tap')), 'no tap left');
    // virsh ran synchronously: the broker's line may still sit in the pipe.
    await broker.waitForLine(new RegExp(`^broker: uid=${lv.uid} pid=\\d+ comm=\\S+: helper --use-vnet --br=brdeny --fd=\\d+: refused \\(exit 3\\): access denied`));
    process.stderr.write(`# libvirt denied: ${Date.now() - t0} ms\n`);
  });
});
