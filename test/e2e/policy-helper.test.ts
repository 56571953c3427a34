// The policy path of the helper, driven as QEMU/libvirt drive it: profiles
// selected by --br (libvirt passes nothing else), --explain, the extended
// protocol's JSON reply, vhost-kernel selection, and policy errors.
import assert from 'node:assert/strict';
import { mkdirSync, mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, before, describe, it } from 'node:test';
import { ExitCode } from '../../src/errors.js';
import { closeFd } from '../../src/sys/libc.js';
import { recvWithFds, socketPair } from '../../src/sys/unix-fd.js';
import { tunGetIff } from '../../src/sys/tun.js';
import { spawn } from 'node:child_process';
import { closeAll, runHelperLikeLibvirt } from '../lib/helper-run.js';
import { NetNs } from '../lib/netns.js';
import { BIN } from '../lib/paths.js';

/** Runs the helper with --socketpair and returns the JSON line and fds. */
async function runExtended(ns: NetNs, args: string[], env: NodeJS.ProcessEnv): Promise<{ code: number | null; stderr: string; reply: Record<string, unknown> | null; fds: number[] }> {
  const [ours, theirs] = socketPair();
  const child = spawn('ip', ['netns', 'exec', ns.name, process.execPath, BIN, '--socketpair=3', ...args], { stdio: ['ignore', 'ignore', 'pipe', theirs], env });
  closeFd(theirs);
  let stderr = '';
  child.stderr!.setEncoding('utf8').on('data', (d: string) => { stderr += d; });
  const code = await new Promise<number | null>((res) => child.once('exit', (c) => res(c)));
  let reply: Record<string, unknown> | null = null;
  let fds: number[] = [];
  try {
    const buf = new Uint8Array(4096);
    const r = recvWithFds(ours, buf, 0, buf.length, 0x40);
    fds = r.fds;
    reply = JSON.parse(Buffer.from(buf.subarray(0, r.n)).toString('utf8')) as Record<string, unknown>;
  } catch { /* nothing sent */ }
  closeFd(ours);
  return { code, stderr, reply, fds };
}

describe('helper policy path', () => {
  let ns: NetNs;
  let dir: string;
  let env: NodeJS.ProcessEnv;
  before(() => {
    ns = NetNs.create();
    ns.addBridge('br0', undefined, 1400);
    ns.addBridge('lanbr');
    ns.ip('link', 'add', 'vx0', 'type', 'veth', 'peer', 'name', 'vx1');
    dir = mkdtempSync(join(tmpdir(), 'qnh-pol-e2e-'));
    mkdirSync(join(dir, 'config/profiles'), { recursive: true });
    mkdirSync(join(dir, 'config/policies'), { recursive: true });
    writeFileSync(join(dir, 'acl.conf'), 'allow all\n');
    // libvirt asks for bridge "lan": the profile maps it to a real bridge and a MAC.
    writeFileSync(join(dir, 'config/profiles/lan.json'), JSON.stringify({ mode: 'bridge', dev: 'lanbr', mac: '52:54:00:00:00:42' }));
    writeFileSync(join(dir, 'vhost-net'), '');
    env = { ...process.env, QEMU_NET_HELPER_ACL: join(dir, 'acl.conf'), QEMU_NET_HELPER_CONFIG: join(dir, 'config'), QEMU_NET_HELPER_STATE_DIR: join(dir, 'state'), QEMU_NET_HELPER_VHOST_NET: join(dir, 'none') };
  });
  after(() => {
    ns.destroy();
    rmSync(dir, { recursive: true, force: true });
  });

  it('a profile named like --br is used (libvirt passes nothing else)', async () => {
    const r = await runHelperLikeLibvirt(ns, ['--use-vnet', '--br=lan', '--fd={FD}'], env);
    try {
      assert.equal(r.code, 0, r.stderr);
      assert.equal(r.fds.length, 1);
      assert.equal((ns.linkDetails(r.iff!.name) as { master: string }).master, 'lanbr');
    } finally {
      closeAll(r.fds);
    }
  });

  it('--explain says why each candidate was taken or skipped (stderr only)', async () => {
    const r = await runHelperLikeLibvirt(ns, ['--use-vnet', '--br=br0', '--fd={FD}', '--mode=bridge', '--explain'], env);
    closeAll(r.fds);
    assert.equal(r.code, 0, r.stderr);
    assert.equal(r.stdout, '');
    assert.match(r.stderr, /explain: bridge\/vhost-kernel: skipped: transport vhost-kernel not offered by the caller/);
    assert.match(r.stderr, /explain: bridge\/tap: taken: br0 is a bridge/);
  });

  it('extended protocol: one JSON line with the fds; vhost-kernel skipped when the device is missing', async () => {
    const r = await runExtended(ns, ['--br=br0', '--protocols=vhost-kernel,tap', '--use-vnet', '--explain'], env);
    try {
      assert.equal(r.code, 0, r.stderr);
      assert.match(r.stderr, /vhost-kernel: skipped: transport vhost-kernel: .*none missing/);
      assert.equal(r.reply!.protocol, 'tap');
      assert.equal(r.reply!.kernel, 'bridge');
      assert.equal(r.reply!.mtu, 1400);
      assert.equal(r.reply!.vnetHdrSize, 12);
      assert.equal(r.reply!.fds, 1);
      assert.equal(r.fds.length, 1);
      assert.equal(tunGetIff(r.fds[0]!)!.name, r.reply!.ifname);
    } finally {
      closeAll(r.fds);
    }
  });

  it('extended protocol: vhost-kernel chosen first when its device exists (two fds)', async () => {
    const r = await runExtended(ns, ['--br=br0', '--protocols=vhost-kernel,tap'], { ...env, QEMU_NET_HELPER_VHOST_NET: join(dir, 'vhost-net') });
    try {
      assert.equal(r.code, 0, r.stderr);
      assert.equal(r.reply!.protocol, 'vhost-kernel');
      assert.equal(r.fds.length, 2);
      assert.ok(tunGetIff(r.fds[0]!), 'first fd is the tap');
    } finally {
      closeAll(r.fds);
    }
  });

  const bad: { name: string; args: string[]; code: number; msg: RegExp; setup?: () => void }[] = [
    { name: 'unknown mode', args: ['--mode=teleport'], code: ExitCode.USAGE, msg: /unknown mode 'teleport'.*use one of veb, vepa/ },
    { name: 'mode that needs --dev without one', args: ['--mode=vepa'], code: ExitCode.USAGE, msg: /mode vepa needs --dev=DEVICE/ },
    { name: '--dev of the wrong kind', args: ['--mode=bridge', '--dev=vx0'], code: ExitCode.NOT_FOUND, msg: /vx0 is a veth device; mode bridge needs --dev of kind bridge/ },
    { name: '--dev that does not exist', args: ['--mode=vepa', '--dev=nope0'], code: ExitCode.NOT_FOUND, msg: /device 'nope0' does not exist/ },
    { name: 'non-unicast MAC', args: ['--mode=bridge', '--mac=01:00:5e:00:00:01'], code: ExitCode.USAGE, msg: /multicast address/ },
    { name: 'unknown profile', args: ['--profile=ghost'], code: ExitCode.CONFIG, msg: /no profile 'ghost'/ },
    {
      name: 'invalid policy file', args: ['--mode=bridge'], code: ExitCode.CONFIG, msg: /invalid policy file: .*broken\.json: modes\.bridge\.candidates\.0\.transport/,
      setup: () => writeFileSync(join(dir, 'config/policies/broken.json'), JSON.stringify({ version: 1, modes: { bridge: { candidates: [{ kernel: 'bridge', transport: 'pigeon' }] } } })),
    },
  ];
  for (const b of bad) {
    it(`bad input: ${b.name} -> exit ${b.code}, nothing left`, async () => {
      const before = ns.links().sort();
      b.setup?.();
      try {
        const r = await runHelperLikeLibvirt(ns, ['--use-vnet', '--br=br0', '--fd={FD}', ...b.args], env);
        closeAll(r.fds);
        assert.equal(r.code, b.code, r.stderr);
        assert.match(r.stderr, b.msg);
        assert.equal(r.fds.length, 0);
        assert.deepEqual(ns.links().sort(), before);
      } finally {
        rmSync(join(dir, 'config/policies/broken.json'), { force: true });
      }
    });
  }
});

describe('socket transport (extended protocol)', () => {
  it('a veth on the bridge relayed to a datagram socket: a TCG guest on -netdev socket,fd= pings the bridge', async (t) => {
    const { bootGuest, guestSkipReason } = await import('../lib/guest.js');
    if (guestSkipReason()) return t.skip(guestSkipReason()!);
    const ns = NetNs.create();
    const dir = mkdtempSync(join(tmpdir(), 'qnh-sock-'));
    try {
      ns.addBridge('br0', '10.0.0.1/24');
      writeFileSync(join(dir, 'acl.conf'), 'allow br0\n');
      const env = { ...process.env, QEMU_NET_HELPER_ACL: join(dir, 'acl.conf'), QEMU_NET_HELPER_STATE_DIR: join(dir, 'state'), QEMU_NET_HELPER_CONFIG: join(dir, 'config') };
      const r = await runExtended(ns, ['--br=br0', '--protocols=socket', '--explain'], env);
      try {
        assert.equal(r.code, 0, r.stderr);
        assert.equal(r.reply!.protocol, 'socket');
        assert.equal(r.reply!.kernel, 'veth');
        assert.equal(r.fds.length, 1);
        const g = await bootGuest({
          ns, fds: r.fds,
          args: ['-netdev', 'socket,id=n0,fd=3', '-device', 'virtio-net-pci,netdev=n0'],
          settings: { mode: 'ping', ip: '10.0.0.2/24', peer: '10.0.0.1', count: 3 },
        });
        const ok = g.markers.find((m) => m.name === 'QNH-PING-OK');
        assert.ok(ok, `no QNH-PING-OK: ${g.markers.map((m) => m.name).join(' ')}\n${g.output.slice(-2000)}\n${g.stderr}`);
      } finally {
        closeAll(r.fds);
      }
    } finally {
      ns.destroy();
      rmSync(dir, { recursive: true, force: true });
    }
  });
});
