// NAT and routed modes end to end: a TCG guest whose NIC comes from the
// helper gets a DHCP lease from our dnsmasq and reaches an address beyond the
// masquerade; a routed guest reaches its LAN through proxy ARP. Afterwards the
// watcher removes what QEMU's exit left.
import assert from 'node:assert/strict';
import { existsSync, mkdirSync, mkdtempSync, readdirSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, before, describe, it } from 'node:test';
import { bootGuest, guestSkipReason } from '../lib/guest.js';
import { NetNs } from '../lib/netns.js';
import { eventually } from '../lib/wait.js';
import { BIN } from '../lib/paths.js';

const skip = guestSkipReason() ?? false;

describe('NAT and routed guests through the helper', { skip }, () => {
  let host: NetNs;
  let outside: NetNs;
  let dir: string;
  let env: NodeJS.ProcessEnv;
  before(() => {
    host = NetNs.create();
    outside = NetNs.create('qnho');
    host.ip('link', 'add', 'uplink0', 'type', 'veth', 'peer', 'name', 'out0', 'netns', outside.name);
    host.ip('addr', 'add', '192.0.2.2/24', 'dev', 'uplink0');
    host.ip('link', 'set', 'uplink0', 'up');
    outside.ip('addr', 'add', '192.0.2.1/24', 'dev', 'out0');
    outside.ip('link', 'set', 'out0', 'up');
    dir = mkdtempSync(join(tmpdir(), 'qnh-natr-'));
    mkdirSync(join(dir, 'config/profiles'), { recursive: true });
    writeFileSync(join(dir, 'acl.conf'), 'allow all\n');
    writeFileSync(join(dir, 'config/profiles/routed.json'), JSON.stringify({ mode: 'route', dev: 'uplink0', guestIp: '192.0.2.50', mac: '52:54:00:00:03:02' }));
    env = { ...process.env, QEMU_NET_HELPER_STATE_DIR: join(dir, 'state'), QEMU_NET_HELPER_CONFIG: join(dir, 'config') };
  });
  after(() => {
    host.destroy();
    outside.destroy();
    rmSync(dir, { recursive: true, force: true });
  });
  const records = (): string[] => (existsSync(join(dir, 'state/endpoints')) ? readdirSync(join(dir, 'state/endpoints')) : []);
  const helper = (flags: string): string => `${BIN} helper ${flags} --acl=${join(dir, 'acl.conf')}`;

  it('nat: DHCP lease from our dnsmasq, then a ping beyond the masquerade', async (t) => {
    const r = await bootGuest({
      ns: host,
      // The outside namespace has no route back to the NAT subnet: only masquerade makes replies return.
      args: ['-netdev', `tap,id=n0,helper=${helper('--mode=nat')}`, '-device', 'virtio-net-pci,netdev=n0,mac=52:54:00:00:03:01'],
      settings: { mode: 'dhcp', peer: '192.0.2.1', count: 3 },
      // QEMU's environment reaches the helper (state dir for the record and dnsmasq's files).
      env,
      timeoutMs: 180_000,
    });
    const lease = r.markers.find((m) => m.name === 'QNH-DHCP-OK');
    assert.ok(lease, `no lease: ${r.markers.map((m) => m.name).join(' ')}\n${r.output.slice(-2500)}\n${r.stderr}`);
    const ok = r.markers.find((m) => m.name === 'QNH-PING-OK');
    assert.ok(ok, `no QNH-PING-OK: ${r.markers.map((m) => m.name).join(' ')}\n${r.output.slice(-2500)}`);
    t.diagnostic(`lease ${lease.text} after ${lease.atMs} ms; ping ok at ${ok.atMs} ms`);
    // QEMU is gone: the watcher takes the NAT network down (no guest left on it).
    await eventually('NAT network removed', () => records().length === 0 && !host.links().some((l) => l.startsWith('qnhnat')));
    assert.doesNotMatch(host.exec('nft', 'list', 'tables'), /qemu_net_helper/);
  });

  it('route: a guest with its own address reaches the LAN through proxy ARP (profile by name)', async (t) => {
    const r = await bootGuest({
      ns: host,
      args: ['-netdev', `tap,id=n0,helper=${helper('--profile=routed')}`, '-device', 'virtio-net-pci,netdev=n0,mac=52:54:00:00:03:02'],
      settings: { mode: 'ping', ip: '192.0.2.50/24', peer: '192.0.2.1', count: 3 },
      env,
    });
    const ok = r.markers.find((m) => m.name === 'QNH-PING-OK');
    assert.ok(ok, `no QNH-PING-OK: ${r.markers.map((m) => m.name).join(' ')}\n${r.output.slice(-2500)}\n${r.stderr}`);
    t.diagnostic(`ping ok at ${ok.atMs} ms`);
    await eventually('route removed', () => records().length === 0 && !/192\.0\.2\.50/.test(host.ip('route', 'show')));
  });
});
