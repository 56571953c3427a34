// vhost-user as a transport of the policy system: `up --transport vhost-user`
// and the extended protocol's `--protocols=vhost-user` ask the running switch
// (through its control socket) for a port and return its socket path; the
// port goes with `down`, or with the QEMU that asked for it.
import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import { existsSync, mkdtempSync, readdirSync, rmSync, statSync, writeFileSync } from 'node:fs';
import { connect } from 'node:net';
import { tmpdir } from 'node:os';
import { join, resolve } from 'node:path';
import { after, before, describe, it } from 'node:test';
import { spawn } from 'node:child_process';
import { ControlClient } from '../lib/control-client.js';
import { ensureGuestImage, Guest, guestSkipReason, qemuArgs, qemuBinary } from '../lib/guest.js';
import { NetNs } from '../lib/netns.js';
import { BIN, ROOT } from '../lib/paths.js';
import { Serve } from '../lib/serve.js';
import { eventually } from '../lib/wait.js';

const CLIENT = resolve(ROOT, 'dist/test/lib/unpriv-client.js');

describe('vhost-user transport: ports of the running switch through the policies', () => {
  let dir: string;
  let ctl: string;
  let serve: Serve;
  let control: ControlClient;
  let env: NodeJS.ProcessEnv;
  const cli = (args: string[]): { code: number | null; json: any; err: string } => {
    const r = spawnSync(process.execPath, [BIN, ...args], { encoding: 'utf8', env });
    let json: unknown = null;
    try { json = JSON.parse(r.stdout); } catch { /* not JSON */ }
    return { code: r.status, json, err: r.stderr };
  };
  const ports = async (): Promise<{ port: number; socket: string }[]> => (await control.request({ op: 'list' })).ports as { port: number; socket: string }[];
  const records = (): string[] => (existsSync(join(dir, 'state/endpoints')) ? readdirSync(join(dir, 'state/endpoints')) : []);

  before(async () => {
    dir = mkdtempSync(join(tmpdir(), 'qnh-vut-'));
    ctl = join(dir, 'switch.ctl');
    serve = new Serve(['--control', ctl, '--events']);
    await serve.ready([ctl], 60_000);
    control = await ControlClient.connect(ctl);
    // Root answers only to interface rules, and a switch port names no interface: an empty ACL will do.
    writeFileSync(join(dir, 'bridge.conf'), '# nothing to allow\n');
    env = { ...process.env, QEMU_NET_HELPER_STATE_DIR: join(dir, 'state'), QEMU_NET_HELPER_SWITCH: ctl, QEMU_NET_HELPER_CONFIG: join(dir, 'config'), QEMU_NET_HELPER_ACL: join(dir, 'bridge.conf') };
  });
  after(async () => {
    control?.close();
    serve?.proc.kill('SIGTERM');
    await serve?.exited;
    if (dir) rmSync(dir, { recursive: true, force: true });
  });

  it('up --transport vhost-user makes a switch port a front-end can connect to; down removes it', async () => {
    const noMemory = cli(['up', '--mode=veb', '--transport=vhost-user', '--id=vu1', '--json']);
    assert.equal(noMemory.code, 2, 'vhost-user without --memory cannot print a working QEMU line');
    assert.match(noMemory.err, /--transport=vhost-user needs --memory/);
    const r = cli(['up', '--mode=veb', '--transport=vhost-user', '--memory=128', '--id=vu1', '--json']);
    assert.equal(r.code, 0, r.err);
    assert.match(r.json.qemu.shell, / -m 128M -object memory-backend-memfd,id=mem,size=128M,share=on -machine memory-backend=mem /);
    assert.doesNotMatch(r.json.qemu.shell, /RAM/);
    const socket = r.json.endpoint.info.socket as string;
    assert.equal(socket, join(dir, 'state/vhost-user/vu1.sock'));
    assert.equal(r.json.endpoint.transport, 'vhost-user');
    assert.match(r.json.qemu.netdev, /^vhost-user,id=vu1,chardev=chr-vu1$/);
    assert.match(r.json.qemu.shell, new RegExp(`-chardev socket,id=chr-vu1,path=${socket}`));
    assert.deepEqual((await ports()).map((p) => p.socket), [socket]);
    // The caller (root here) owns the port: its socket is 0600, no --socket-mode needed.
    assert.deepEqual(((await control.request({ op: 'list' })).ports as { owner: unknown }[]).map((p) => p.owner), [{ uid: 0, gid: 0 }]);
    assert.equal(statSync(socket).mode & 0o777, 0o600);
    const qemu = qemuBinary();
    if (qemu) {
      // The printed line as it is (machine and display aside): QEMU accepts it and connects.
      const line = (r.json.qemu.shell as string).replace(/^qemu-system-x86_64 \.\.\. /, '').split(' ');
      const q = spawn(qemu, ['-machine', 'q35', '-display', 'none', '-nodefaults', '-S', ...line], { stdio: ['ignore', 'ignore', 'pipe'] });
      let qerr = '';
      q.stderr!.setEncoding('utf8').on('data', (d: string) => { qerr += d; });
      try {
        await eventually(`QEMU to connect with the printed line (${qerr})`, () => serve.events.some((e) => e.event === 'connected' && e.socket === socket), 60_000);
      } finally {
        q.kill('SIGKILL');
        await new Promise((res) => q.once('exit', res));
      }
    } else {
      const s = connect(socket);
      await new Promise<void>((res, rej) => { s.once('connect', res); s.once('error', rej); });
      await eventually('a connected event for the port', () => serve.events.some((e) => e.event === 'connected' && e.socket === socket), 20_000);
      s.destroy();
    }
    const d = cli(['down', 'vu1', '--json']);
    assert.equal(d.code, 0, d.err);
    assert.deepEqual(await ports(), []);
    assert.deepEqual(records(), []);
  });

  it('--protocols=vhost-user on the extended protocol returns the socket path; the port goes with its owner', async () => {
    const job = { kind: 'helper', args: ['--socketpair={FD}', '--protocols=vhost-user', '--mode=vepa', '--mac=52:54:00:00:00:71'], env };
    const r = spawnSync(process.execPath, [CLIENT, JSON.stringify(job)], { encoding: 'utf8' });
    assert.equal(r.status, 0, r.stderr);
    const out = JSON.parse(r.stdout) as { code: number; stderr: string; text: string; targets: string[] };
    assert.equal(out.code, 0, out.stderr);
    const reply = JSON.parse(out.text) as { protocol: string; fds: number; mac: string; info: { socket: string; switchMode: string } };
    assert.equal(reply.protocol, 'vhost-user');
    assert.equal(reply.fds, 0);
    assert.deepEqual(out.targets, []);
    assert.equal(reply.mac, '52:54:00:00:00:71');
    assert.equal(reply.info.switchMode, 'vepa');
    // The receiver (the socketpair's peer, i.e. "QEMU") has exited: its watcher removes the port.
    await eventually('the port of an exited owner to go', () => records().length === 0, 30_000);
    assert.deepEqual(await ports(), []);
  });

  it('the plain helper protocol never picks vhost-user (QEMU expects a tap fd)', () => {
    const job = { kind: 'helper', args: ['--fd={FD}', '--mode=veb'], env };
    const r = spawnSync(process.execPath, [CLIENT, JSON.stringify(job)], { encoding: 'utf8' });
    const out = JSON.parse(r.stdout) as { code: number; stderr: string };
    assert.equal(out.code, 2, out.stderr);
    assert.match(out.stderr, /mode veb needs --dev/);
  });
});

describe('run --nic vhost=user: a TCG guest on a switch port', { skip: guestSkipReason() ?? false }, () => {
  let ns: NetNs;
  let dir: string;
  let serve: Serve;
  before(async () => {
    ns = NetNs.create('qnh-vur');
    ns.addBridge('br0', '10.0.8.1/24');
    dir = mkdtempSync(join(tmpdir(), 'qnh-vur-'));
    writeFileSync(join(dir, 'bridge.conf'), '# nothing to allow\n');
    serve = new Serve(['--control', join(dir, 'switch.ctl'), '--br', 'br0'], ns);
    await serve.ready([join(dir, 'switch.ctl')], 60_000);
  });
  after(async () => {
    serve?.proc.kill('SIGTERM');
    await serve?.exited;
    ns?.destroy();
    if (dir) rmSync(dir, { recursive: true, force: true });
  });

  it('run adds the port, shared memory and the vhost-user netdev; the guest pings the bridge; the port goes with QEMU', async () => {
    const image = await ensureGuestImage();
    const env = { ...process.env, QEMU_NET_HELPER_STATE_DIR: join(dir, 'state'), QEMU_NET_HELPER_SWITCH: join(dir, 'switch.ctl'), QEMU_NET_HELPER_ACL: join(dir, 'bridge.conf') };
    const opts = { settings: { mode: 'serve' as const, ip: '10.0.8.2/24', peer: '10.0.8.1', count: 3, wait: 120 } };
    const proc = spawn('ip', ['netns', 'exec', ns.name, process.execPath, BIN, 'run', '--nic', 'mode=veb,vhost=user,mac=52:54:00:00:08:02', '--', qemuBinary()!, ...qemuArgs(image, opts)],
      { env, stdio: ['ignore', 'pipe', 'pipe'], detached: true });
    const g = new Guest(proc, { ...opts, timeoutMs: 240_000, name: 'run-vhost-user' });
    try {
      const ping = await g.waitFor('PING-OK', 180_000).catch(() => undefined);
      assert.ok(ping, `no QNH-PING-OK: ${g.output().slice(-2000)}\n${g.stderr()}\n${serve.log()}`);
      assert.match(g.stderr(), /n0: vswitch\/vhost-user port\d+/);
    } finally {
      try { process.kill(proc.pid!, 'SIGTERM'); } catch { /* gone */ }
      await g.result();
      try { process.kill(-proc.pid!, 'SIGKILL'); } catch { /* group gone */ }
    }
    const ctl = await ControlClient.connect(join(dir, 'switch.ctl'));
    try {
      await eventually('the port to go with QEMU', () => !existsSync(join(dir, 'state/vhost-user')) || readdirSync(join(dir, 'state/vhost-user')).length === 0, 30_000);
      assert.deepEqual((await ctl.request({ op: 'list' })).ports, []);
    } finally {
      ctl.close();
    }
  });
});
