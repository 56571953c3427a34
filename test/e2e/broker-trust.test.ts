// The broker against hostile local users: every attack of issue 7 point 4 made
// from an unprivileged caller (setpriv), refused or harmless; users see and
// remove only their own endpoints; 100 concurrent requests from 4 users each
// get their own answer; the broker SIGKILLed mid-request and between requests
// loses and leaks nothing; socket activation as systemd does it.
import assert from 'node:assert/strict';
import { spawn, spawnSync } from 'node:child_process';
import { chmodSync, existsSync, mkdirSync, mkdtempSync, readdirSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join, resolve } from 'node:path';
import { after, before, describe, it } from 'node:test';
import type { BrokerReply, BrokerRequest } from '../../src/broker/protocol.js';
import { startTestBroker, type BrokerRun } from '../lib/broker.js';
import { NetNs } from '../lib/netns.js';
import { BIN, ROOT } from '../lib/paths.js';
import { haveQemu, QEMU } from '../lib/qemu.js';
import { eventually } from '../lib/wait.js';

const CLIENT = resolve(ROOT, 'dist/test/lib/unpriv-client.js');
const USER = 65534;
const ACL = [
  'allow br0',
  `allow mode:vepa user=${USER}`,
  `allow vA user=${USER}`,
  `allow profile:p9 user=${USER}`,
  `allow mode:passthrough user=${USER}`,
  '',
].join('\n');

interface HelperRun { code: number | null; stderr: string; text: string; targets: string[]; iff: (string | null)[] }

function setpriv(uid: number): string[] {
  return ['setpriv', `--reuid=${uid}`, `--regid=${uid}`, '--clear-groups'];
}

describe('broker: unprivileged callers, trust boundary, lifecycle', () => {
  let ns: NetNs;
  let b: BrokerRun;
  let clientEnv: NodeJS.ProcessEnv;
  let scratch: string;

  /** The receiver (as `uid`) runs the helper with these args and environment. */
  const helperAs = (uid: number, args: string[], env: NodeJS.ProcessEnv = {}): HelperRun => {
    const job = { kind: 'helper', args, env: { ...clientEnv, ...env } };
    const r = spawnSync('ip', ['netns', 'exec', ns.name, ...setpriv(uid), process.execPath, CLIENT, JSON.stringify(job)], { encoding: 'utf8' });
    assert.equal(r.status, 0, r.stderr);
    return JSON.parse(r.stdout) as HelperRun;
  };
  const burstAs = (uid: number, requests: BrokerRequest[]): Promise<BrokerReply[]> => new Promise((res, rej) => {
    const job = { kind: 'burst', socket: b.socket, requests };
    const p = spawn('ip', ['netns', 'exec', ns.name, ...setpriv(uid), process.execPath, CLIENT, JSON.stringify(job)], { stdio: ['ignore', 'pipe', 'pipe'] });
    let out = '';
    let err = '';
    p.stdout.setEncoding('utf8').on('data', (d: string) => { out += d; });
    p.stderr.setEncoding('utf8').on('data', (d: string) => { err += d; });
    p.once('exit', (code) => (code === 0 ? res(JSON.parse(out) as BrokerReply[]) : rej(new Error(`burst as ${uid}: ${err}`))));
  });
  const cliAs = (uid: number, args: string[]): { code: number | null; json: any; err: string } => {
    const r = spawnSync('ip', ['netns', 'exec', ns.name, ...setpriv(uid), process.execPath, BIN, ...args], { encoding: 'utf8', env: clientEnv });
    let json: unknown = null;
    try { json = JSON.parse(r.stdout); } catch { /* not JSON */ }
    return { code: r.status, json, err: r.stderr };
  };
  const macvtaps = (): string[] => (JSON.parse(ns.ip('-d', '-json', 'link', 'show')) as { ifname: string; linkinfo?: { info_kind?: string } }[])
    .filter((l) => l.linkinfo?.info_kind === 'macvtap').map((l) => l.ifname);
  // Records only: a writer killed mid-write leaves a .NAME.PID.RAND.tmp beside them (gc removes it).
  const records = (): string[] => (existsSync(join(b.stateDir, 'endpoints')) ? readdirSync(join(b.stateDir, 'endpoints')).filter((f) => !f.startsWith('.') && f.endsWith('.json')) : []);

  before(async () => {
    ns = NetNs.create();
    ns.addBridge('br0', '10.77.0.1/24');
    ns.addBridge('br9');
    ns.ip('link', 'add', 'vA', 'type', 'veth', 'peer', 'name', 'vB');
    ns.ip('link', 'set', 'vA', 'up');
    ns.ip('link', 'set', 'vB', 'up');
    b = await startTestBroker(ns, { acl: ACL, profiles: { p9: { mode: 'bridge', dev: 'br9' } }, startTimeoutMs: 60_000 });
    clientEnv = b.clientEnv({ PATH: process.env.PATH });
    scratch = mkdtempSync(join(tmpdir(), 'qnh-evil-'));
    chmodSync(scratch, 0o755);
  });
  after(async () => {
    await b?.stop();
    ns?.destroy();
    if (scratch) rmSync(scratch, { recursive: true, force: true });
  });

  it('an unprivileged helper gets a tap on an allowed bridge, and the log names who, what and the verdict', async () => {
    const r = helperAs(USER, ['--use-vnet', '--fd={FD}', '--br=br0']);
    assert.equal(r.code, 0, r.stderr);
    assert.equal(r.iff.length, 1);
    const tap = r.iff[0]!;
    assert.match(tap, /^tap\d+$/);
    const line = new RegExp(`uid=${USER} pid=\\d+ comm=\\S+: helper --use-vnet --fd=3 --br=br0: allowed: bridge bridge/tap ${tap}`);
    await b.waitForLine(line, 10_000);
  });

  it("the caller's QEMU_NET_HELPER_VHOST_NET cannot make the broker open a root-only file", () => {
    const secret = join(b.dir, 'secret');
    writeFileSync(secret, 'root only\n', { mode: 0o600 });
    const r = helperAs(USER, ['--socketpair={FD}', '--protocols=vhost-kernel,tap', '--br=br0'], { QEMU_NET_HELPER_VHOST_NET: secret, QEMU_NET_HELPER_STATE_DIR: scratch, QEMU_NET_HELPER_ACL: '/dev/null' });
    assert.equal(r.code, 0, r.stderr);
    const reply = JSON.parse(r.text) as { protocol: string };
    assert.equal(reply.protocol, 'tap', 'no vhost-net device here: the broker falls back to tap, never to the caller\'s file');
    assert.equal(r.targets.includes(secret), false);
    assert.equal(readFileSync(secret, 'utf8'), 'root only\n');
    assert.deepEqual(readdirSync(scratch), [], "the caller's state directory was not used");
  });

  it("the caller's PATH chooses no program: a macvtap is made with the system's ip, and released when its owner exits", async () => {
    const evil = join(scratch, 'bin');
    mkdirSync(evil, { mode: 0o755 });
    for (const prog of ['ip', 'nft', 'dnsmasq', 'mknod']) writeFileSync(join(evil, prog), `#!/bin/sh\ntouch ${scratch}/pwned-${prog}\nexit 1\n`, { mode: 0o755 });
    const r = helperAs(USER, ['--fd={FD}', '--mode=vepa', '--dev=vA', '--mac=52:54:00:00:00:31'], { PATH: `${evil}:/usr/sbin:/usr/bin:/sbin:/bin` });
    assert.equal(r.code, 0, r.stderr);
    assert.deepEqual(readdirSync(scratch).filter((f) => f.startsWith('pwned')), []);
    // The receiver that owned it has exited: the broker's watcher removes it.
    await eventually('the macvtap of an exited owner to go', () => records().length === 0 && macvtaps().length === 0, 30_000);
  });

  it('--mode=nat under "deny all" creates nothing: no bridge, no nft table, no dnsmasq, ip_forward untouched', () => {
    writeFileSync(b.aclFile, 'deny all\n');
    try {
      const fwd = ns.exec('cat', '/proc/sys/net/ipv4/ip_forward').trim();
      const links = ns.links();
      const r = helperAs(USER, ['--socketpair={FD}', '--protocols=tap', '--mode=nat']);
      assert.equal(r.code, 3, r.stderr);
      assert.match(r.stderr, /access denied: mode 'nat' is not allowed by .*bridge\.conf for uid 65534/);
      assert.deepEqual(ns.links(), links);
      assert.doesNotMatch(ns.exec('nft', 'list', 'tables'), /qemu_net_helper/);
      assert.equal(ns.exec('cat', '/proc/sys/net/ipv4/ip_forward').trim(), fwd);
      assert.doesNotMatch(spawnSync('ip', ['netns', 'pids', ns.name], { encoding: 'utf8' }).stdout.split('\n').map((p) => { try { return readFileSync(`/proc/${p}/comm`, 'utf8'); } catch { return ''; } }).join(''), /dnsmasq/);
    } finally {
      writeFileSync(b.aclFile, ACL);
    }
  });

  it("a profile cannot smuggle in a denied bridge; --vf-pool entries, --acl and --config are checked too", () => {
    const p = helperAs(USER, ['--fd={FD}', '--br=p9']);
    assert.equal(p.code, 3);
    assert.match(p.stderr, /bridge 'br9' is not allowed/);
    assert.equal(ns.ip('-json', 'link', 'show', 'master', 'br9').trim(), '[]');
    const vf = helperAs(USER, ['--fd={FD}', '--mode=passthrough', '--dev=vA', '--vf-pool=0000:00:01.0', '--mac=52:54:00:00:00:32']);
    assert.equal(vf.code, 3);
    assert.match(vf.stderr, /vf '0000:00:01\.0' is not allowed/);
    for (const flag of ['--acl=/tmp/mine.conf', '--config=/tmp/mine']) {
      const r = helperAs(USER, ['--fd={FD}', '--br=br0', flag]);
      assert.equal(r.code, 3);
      assert.match(r.stderr, /is only for root/);
    }
  });

  it("a MAC must be unicast and not another guest's", () => {
    const root = spawnSync('ip', ['netns', 'exec', ns.name, process.execPath, BIN, 'up', '--mode=vepa', '--dev=vA', '--mac=52:54:00:00:00:77', '--id=m77', '--json'], { encoding: 'utf8', env: { ...process.env, QEMU_NET_HELPER_STATE_DIR: b.stateDir } });
    assert.equal(root.status, 0, root.stderr);
    try {
      const r = helperAs(USER, ['--fd={FD}', '--mode=vepa', '--dev=vA', '--mac=52:54:00:00:00:77']);
      assert.equal(r.code, 3);
      assert.match(r.stderr, /MAC 52:54:00:00:00:77 is in use by endpoint m77/);
      const m = helperAs(USER, ['--fd={FD}', '--mode=vepa', '--dev=vA', '--mac=01:00:5e:00:00:01']);
      assert.equal(m.code, 2);
      assert.match(m.stderr, /multicast/);
    } finally {
      spawnSync('ip', ['netns', 'exec', ns.name, process.execPath, BIN, 'down', 'm77'], { env: { ...process.env, QEMU_NET_HELPER_STATE_DIR: b.stateDir } });
    }
  });

  it('100 concurrent up requests from 4 users: each gets its own answer; users list and remove only their own', async () => {
    const users = [USER, 65533, 65532, 65531];
    const replies = await Promise.all(users.map((uid) => burstAs(uid, Array.from({ length: 25 }, (_, i) => ({ v: 1, op: 'up', options: { mode: 'bridge', dev: 'br0', id: `u${uid}-${i}` } }) as BrokerRequest))));
    users.forEach((uid, u) => replies[u]!.forEach((r, i) => {
      assert.equal(r.ok, true, JSON.stringify(r));
      const ep = (r as { result: { endpoint: { id: string; uid: number; ifname: string } } }).result.endpoint;
      assert.equal(ep.id, `u${uid}-${i}`);
      assert.equal(ep.uid, uid);
    }));
    assert.equal(records().length, 100);
    const mine = cliAs(USER, ['list', '--json']);
    assert.equal(mine.code, 0, mine.err);
    assert.deepEqual((mine.json.endpoints as { id: string }[]).map((e) => e.id).sort(), Array.from({ length: 25 }, (_, i) => `u${USER}-${i}`).sort());
    const other = cliAs(USER, ['down', 'u65533-0']);
    assert.equal(other.code, 3);
    assert.match(other.err, /belongs to another user/);
    const downs = await Promise.all(users.map((uid) => burstAs(uid, Array.from({ length: 25 }, (_, i) => ({ v: 1, op: 'down', id: `u${uid}-${i}` }) as BrokerRequest))));
    assert.equal(downs.flat().every((r) => r.ok), true);
    assert.equal(records().length, 0);
    assert.equal(ns.ip('-json', 'link', 'show', 'master', 'br0').trim(), '[]');
  });

  it('a request process SIGKILLed mid-request: the broker answers, stays up and removes the half-made endpoint', async () => {
    await b.crash();
    await b.restart({ QEMU_NET_HELPER_FAULT_AFTER_STEP: '1' });
    const r = helperAs(USER, ['--fd={FD}', '--mode=vepa', '--dev=vA', '--mac=52:54:00:00:00:41']);
    assert.equal(r.code, 10, r.stderr);
    assert.match(r.stderr, /the request process ended without an answer \(SIGKILL\); what it had made is released/);
    await b.waitForLine(/after a failed request: gc: released 1/, 60_000);
    assert.equal(b.proc.exitCode, null, 'the broker itself is still running');
    assert.equal(records().length, 0);
    assert.deepEqual(macvtaps(), []);
    await b.crash();
    await b.restart();
  });

  it('SIGKILLed between requests, the restarted broker keeps watching a live QEMU and cleans up after it', { skip: !haveQemu() }, async () => {
    const home = mkdtempSync(join(tmpdir(), 'qnh-uq-'));
    chmodSync(home, 0o777);
    const q = ns.spawn('setpriv', [...setpriv(USER).slice(1), QEMU, '-machine', 'none', '-nodefaults', '-display', 'none', '-S',
      '-netdev', `tap,id=n0,helper=${BIN} --mode=vepa --dev=vA --mac=52:54:00:00:00:51`], { stdio: ['ignore', 'ignore', 'pipe'], env: clientEnv });
    let qerr = '';
    q.stderr!.setEncoding('utf8').on('data', (d: string) => { qerr += d; });
    try {
      await eventually('QEMU to hold a macvtap', () => macvtaps().length === 1 && records().length === 1, 60_000);
      // Killed only once the setup was committed and answered: a broker killed before that
      // failed the request, and its restart rightly removes what it had made.
      await b.waitForLine(/--mode=vepa --dev=vA --mac=52:54:00:00:00:51 .*: allowed: /, 60_000);
      await b.crash();
      await b.restart();
      assert.equal(records().length, 1, `a live QEMU's endpoint survives the broker's restart (${qerr})`);
      assert.equal(macvtaps().length, 1);
      q.kill('SIGTERM');
      await eventually('the restarted broker to release it after QEMU quit', () => records().length === 0 && macvtaps().length === 0, 60_000)
        .catch((e: Error) => { throw new Error(`${e.message}; records ${records().join(',')}; broker log:\n${b.lines().join('\n')}`); });
    } finally {
      q.kill('SIGKILL');
      rmSync(home, { recursive: true, force: true });
    }
  });

  it('socket activation: systemd-socket-activate passes the listening socket as fd 3', { skip: !existsSync('/usr/bin/systemd-socket-activate') }, async () => {
    await b.crash(); // the after() hook still removes its directory
    const sock = join(b.dir, 'activated.sock');
    const log: string[] = [];
    const p = ns.spawn('systemd-socket-activate', ['-l', sock, '-E', `QEMU_NET_HELPER_STATE_DIR=${b.stateDir}`, process.execPath, BIN, 'daemon', '--acl', b.aclFile, '--config', b.configDir],
      { stdio: ['ignore', 'ignore', 'pipe'] });
    p.stderr!.setEncoding('utf8').on('data', (d: string) => log.push(...d.split('\n')));
    try {
      await eventually('the activation socket', () => existsSync(sock), 30_000);
      chmodSync(sock, 0o666); // systemd: SocketMode=0666 (contrib/systemd/qemu-net-helper.socket)
      const r = helperAs(USER, ['--fd={FD}', '--br=br0'], { QEMU_NET_HELPER_BROKER: sock });
      assert.equal(r.code, 0, r.stderr);
      assert.match(r.iff[0] ?? '', /^tap\d+$/);
      await eventually('the log line', () => log.some((l) => /listening on fd 3 \(socket activation\)/.test(l)), 10_000);
    } finally {
      p.kill('SIGTERM');
      await new Promise((r) => p.once('exit', r));
    }
  });
});
