// The CNI plugin's "vhost-user" transport against the running vhost-user
// switch (`vhost-user serve --control`): ADD asks it for a port and returns
// the port's socket as socketPath (CNI 1.1), a front-end can connect there,
// CHECK sees the port, DEL (twice) removes it, STATUS says 50 without a switch.
// The port belongs to the config's owner/group (the pod's QEMU), else to root.
import assert from 'node:assert/strict';
import { connect } from 'node:net';
import { existsSync, mkdtempSync, rmSync, statSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, before, describe, it } from 'node:test';
import { listEndpoints } from '../../src/state/endpoints.js';
import { cni, type CniCall } from '../lib/cni.js';
import { ControlClient } from '../lib/control-client.js';
import { NetNs } from '../lib/netns.js';
import { Serve } from '../lib/serve.js';
import { eventually } from '../lib/wait.js';

describe('CNI vhost-user transport on the running switch', () => {
  let dir: string;
  let ctl: string;
  let serve: Serve;
  let control: ControlClient;
  let h: NetNs;
  let pod: NetNs;
  const conf = (extra: Record<string, unknown> = {}): Record<string, unknown> => ({
    cniVersion: '1.1.0', name: 'vu', type: 'qemu-net-helper', transport: 'vhost-user', mode: 'vepa',
    mac: '52:54:00:55:00:01', ...extra,
  });
  // The runtime's (root's) environment chooses the paths; the network configuration cannot.
  const env = (): Record<string, string> => ({ QEMU_NET_HELPER_STATE_DIR: join(dir, 'state'), QEMU_NET_HELPER_SWITCH: ctl });
  const call = (command: string): CniCall => ({ command, containerId: 'vm1', netns: `/run/netns/${pod.name}`, ifname: 'net1', extraEnv: env() });
  const ports = async (): Promise<{ port: number; socket: string; mode?: string }[]> => (await control.request({ op: 'list' })).ports as { port: number; socket: string }[];

  before(async () => {
    dir = mkdtempSync(join(tmpdir(), 'qnh-cni-vu-'));
    ctl = join(dir, 'switch.ctl');
    serve = new Serve(['--control', ctl, '--events']);
    await serve.ready([ctl], 60_000);
    control = await ControlClient.connect(ctl);
    h = NetNs.create('qnhcU');
    pod = NetNs.create('qnhcU');
  });
  after(async () => {
    control?.close();
    serve?.proc.kill('SIGTERM');
    await serve?.exited;
    h?.destroy();
    pod?.destroy();
    if (dir) rmSync(dir, { recursive: true, force: true });
  });

  it('ADD returns the port socket as socketPath; a front-end connects; CHECK; DEL twice removes the port', async () => {
    const add = cni(h, call('ADD'), conf());
    assert.equal(add.status, 0, add.stdout + add.stderr);
    const iface = add.json.interfaces.at(-1);
    assert.equal(iface.name, 'net1');
    assert.equal(iface.mac, '52:54:00:55:00:01');
    assert.equal(iface.sandbox, `/run/netns/${pod.name}`);
    assert.ok(iface.socketPath.startsWith(join(dir, 'state/vhost-user/')), iface.socketPath);
    assert.ok(existsSync(iface.socketPath));
    assert.deepEqual((await ports()).map((p) => p.socket), [iface.socketPath]);
    assert.deepEqual(pod.links(), ['lo'], 'nothing is made in the sandbox');
    const older = cni(h, call('CHECK'), { ...conf({ cniVersion: '1.0.0' }), prevResult: add.json });
    assert.equal(older.status, 0, older.stdout);

    const s = connect(iface.socketPath);
    await new Promise<void>((res, rej) => { s.once('connect', res); s.once('error', rej); });
    await eventually('the switch to see the front-end', () => serve.events.some((e) => e.event === 'connected' && e.socket === iface.socketPath), 20_000);
    s.destroy();

    assert.equal(cni(h, call('CHECK'), { ...conf(), prevResult: add.json }).status, 0);
    for (const round of [1, 2]) {
      const del = cni(h, call('DEL'), conf());
      assert.equal(del.status, 0, `DEL ${round}: ${del.stdout}`);
    }
    assert.deepEqual(await ports(), []);
    assert.deepEqual(listEndpoints(join(dir, 'state')), []);
    const gone = cni(h, call('CHECK'), { ...conf(), prevResult: add.json });
    assert.equal(gone.json?.code, 105, 'CHECK notices the port is gone');
  });

  it('a 1.0.0 result has no socketPath; STATUS is 50 without a switch; mode passthrough is refused naming the field', () => {
    assert.equal(cni(h, { command: 'STATUS', extraEnv: env() }, conf()).status, 0);
    const none = cni(h, { command: 'STATUS', extraEnv: { ...env(), QEMU_NET_HELPER_SWITCH: join(dir, 'nothing.ctl') } }, conf());
    assert.equal(none.json?.code, 50, none.stdout);
    const bad = cni(h, call('ADD'), conf({ mode: 'passthrough' }));
    assert.equal(bad.json?.code, 7);
    assert.match(bad.json.msg, /field 'mode'/);
    const add = cni(h, call('ADD'), conf({ cniVersion: '1.0.0' }));
    assert.equal(add.status, 0, add.stdout);
    assert.equal(add.json.interfaces.at(-1).socketPath, undefined, '1.0.0 knows no socketPath');
    assert.equal(cni(h, call('DEL'), conf({ cniVersion: '1.0.0' })).status, 0);
  });

  it("the network configuration's stateDir and switchControl choose nothing: refused unless they name the paths in force", () => {
    assert.equal(cni(h, { command: 'STATUS', extraEnv: env() }, conf({ switchControl: ctl, stateDir: join(dir, 'state') })).status, 0, 'naming the paths in force is fine');
    const elsewhere = join(dir, 'elsewhere');
    const w = cni(h, call('ADD'), conf({ stateDir: elsewhere }));
    assert.equal(w.json?.code, 7, w.stdout);
    assert.match(w.json.msg, /stateDir '.*elsewhere' in the network configuration is not the plugin's .*does not choose where root writes or connects/);
    assert.equal(existsSync(elsewhere), false, 'nothing written there');
    const c = cni(h, call('ADD'), conf({ switchControl: join(dir, 'evil.ctl') }));
    assert.equal(c.json?.code, 7, c.stdout);
    assert.match(c.json.msg, /switchControl/);
  });

  it('owner/group: the port and its socket belong to the pod\'s unprivileged QEMU user (0600)', async () => {
    const add = cni(h, call('ADD'), conf({ owner: 65534, group: 65534 }));
    assert.equal(add.status, 0, add.stdout + add.stderr);
    const socket = add.json.interfaces.at(-1).socketPath as string;
    const st = statSync(socket);
    assert.deepEqual([st.uid, st.gid, st.mode & 0o777], [65534, 65534, 0o600]);
    const list = (await control.request({ op: 'list' })).ports as { socket: string; owner: unknown }[];
    assert.deepEqual(list.map((p) => [p.socket, p.owner]), [[socket, { uid: 65534, gid: 65534 }]]);
    assert.equal(cni(h, call('DEL'), conf({ owner: 65534, group: 65534 })).status, 0);
    assert.deepEqual(await ports(), []);
    const plain = cni(h, call('ADD'), conf());
    assert.equal(plain.status, 0, plain.stdout);
    const pst = statSync(plain.json.interfaces.at(-1).socketPath as string);
    assert.deepEqual([pst.uid, pst.mode & 0o777], [0, 0o600], 'without owner: root\'s (the runtime\'s), 0600');
    assert.equal(cni(h, call('DEL'), conf()).status, 0);
  });
});
