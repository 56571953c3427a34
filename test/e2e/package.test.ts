// The Debian package on this machine: `npm run package`'s .deb is installed
// with apt-get, its broker is socket-activated from the installed files
// (systemd-socket-activate: systemd is not PID 1 here, so the maintainer
// scripts' systemd steps are no-ops), an unprivileged QEMU gets its NICs
// through /usr/bin/qemu-net-helper, an upgrade keeps live endpoints, and
// remove/purge leave the conffiles / nothing. Purged at exit whatever happens.
import assert from 'node:assert/strict';
import { spawnSync, type ChildProcess } from 'node:child_process';
import { chmodSync, existsSync, mkdirSync, mkdtempSync, readdirSync, readFileSync, realpathSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, before, describe, it } from 'node:test';
import {
  aptCheck, aptInstall, aptPurge, aptRemove, buildDeb, cleanUp, debFiles, debSkipReason, debStatus, dpkgAuditClean,
  leftovers, lintian, own, PKG, runIn, STATE, type Run,
} from '../lib/deb.js';
import { NetNs } from '../lib/netns.js';
import { ROOT } from '../lib/paths.js';
import { haveQemu, macvtapsHeldBy, setprivArgs, startQemu, tapsHeldBy, type QemuRun, type RunAs } from '../lib/qemu.js';
import { eventually } from '../lib/wait.js';

const skip = !haveQemu() ? 'qemu-system-x86_64 is not installed' : debSkipReason();
const NOBODY: RunAs = { uid: 65534, gid: 65534 };
const HELPER = `/usr/bin/${PKG}`;
const SOCKET = `${STATE}/broker.sock`;
const ACL = `/etc/${PKG}/bridge.conf`;
const PROFILES = `/etc/${PKG}/profiles`;
// What an unprivileged QEMU's helper sees: no QEMU_NET_HELPER_* at all, so
// it asks the broker at the installed default socket.
const CLEAN_ENV = { PATH: '/usr/sbin:/usr/bin:/sbin:/bin', LC_ALL: 'C' };
const VERSION = (JSON.parse(readFileSync(join(ROOT, 'package.json'), 'utf8')) as { version: string }).version;
const UPGRADE = `${VERSION}+upgrade1`;

/** The broker as systemd runs it: a listening socket whose first connection execs `qemu-net-helper daemon`. */
class Activated {
  readonly proc: ChildProcess;
  private log = '';
  private closed: Promise<void>;
  constructor(ns: NetNs) {
    this.proc = ns.spawn('systemd-socket-activate', ['-l', SOCKET, HELPER, 'daemon'], { stdio: ['ignore', 'ignore', 'pipe'], env: CLEAN_ENV });
    this.proc.stderr!.setEncoding('utf8').on('data', (d: string) => { this.log += d; });
    this.closed = new Promise((res) => this.proc.once('close', () => res()));
  }
  lines(): string { return this.log; }
  /** The program now running as this pid (systemd-socket-activate execs the broker in place). */
  cmdline(): string { try { return readFileSync(`/proc/${this.proc.pid}/cmdline`, 'latin1').replace(/\0/g, ' '); } catch { return ''; } }
  async listening(): Promise<void> {
    await eventually(`systemd-socket-activate listening on ${SOCKET}; log: ${this.log}`, () => /Listening on /.test(this.log) && existsSync(SOCKET), 30_000);
    // The socket unit's SocketMode=0666 (systemd-socket-activate has no such option).
    chmodSync(SOCKET, 0o666);
  }
  async stop(): Promise<void> {
    if (this.proc.exitCode === null && this.proc.signalCode === null) {
      // `ip netns exec` forwards no signal: signal what it exec'd into.
      const pids = spawnSync('pgrep', ['-P', String(this.proc.pid)], { encoding: 'utf8' }).stdout.split('\n').filter(Boolean);
      for (const p of [String(this.proc.pid), ...pids]) { try { process.kill(Number(p), 'SIGTERM'); } catch { /* gone */ } }
      const t = setTimeout(() => { try { this.proc.kill('SIGKILL'); } catch { /* gone */ } }, 10_000);
      await this.closed;
      clearTimeout(t);
    }
  }
}

const records = (): string[] => { const d = join(STATE, 'endpoints'); return existsSync(d) ? readdirSync(d).filter((f) => f.endsWith('.json')) : []; };

describe('the Debian package: install, broker under socket activation, upgrade, remove, purge', { skip }, () => {
  let dir: string;
  let deb1: string;
  let deb2: string;
  let lint: Promise<Run>;
  let ns: NetNs;
  let broker: Activated | undefined;
  const qemus: QemuRun[] = [];
  const started = Date.now();

  before(async () => {
    dir = mkdtempSync(join(tmpdir(), 'qnh-deb-out-'));
    chmodSync(dir, 0o755); // apt's _apt user reads the file from here
    [deb1, deb2] = await Promise.all([buildDeb(dir), buildDeb(dir, UPGRADE)]);
    process.stderr.write(`# package: built ${deb1} and ${deb2} in ${Date.now() - started} ms\n`);
    lint = lintian(deb1);
    ns = NetNs.create('qnh-deb');
    ns.addBridge('br0', undefined, 1400);
    ns.addBridge('brdeny');
    ns.ip('link', 'add', 'veth0', 'type', 'veth', 'peer', 'name', 'veth1');
    ns.ip('link', 'set', 'veth0', 'up');
    // dpkg runs the maintainer scripts where the broker works: prerm's gc
    // then releases what it finds in the test namespace, not the machine's.
    runIn(ns.name);
  });
  after(async () => {
    for (const q of qemus) await q.quit();
    await broker?.stop();
    cleanUp();
    ns?.destroy();
    if (dir) rmSync(dir, { recursive: true, force: true });
    process.stderr.write(`# package: ${Date.now() - started} ms in all\n`);
  });

  it('apt-get install ./FILE: the helper, units, default-deny ACL and conffiles, nothing pointing at the source tree', () => {
    aptInstall(deb1);
    assert.deepEqual(debStatus(), { status: 'ii', version: VERSION });
    assert.equal(realpathSync(HELPER), `/usr/lib/${PKG}/bin/${PKG}.cjs`);
    for (const u of ['socket', 'service']) assert.ok(existsSync(`/lib/systemd/system/${PKG}.${u}`), `${u} unit`);
    assert.match(readFileSync(`/lib/systemd/system/${PKG}-switch.service`, 'utf8'), /^ExecStart=\/usr\/bin\/qemu-net-helper vhost-user serve --config /m, 'the switch unit, installed');
    assert.ok(!existsSync(`/etc/systemd/system/multi-user.target.wants/${PKG}-switch.service`), 'the switch unit is not enabled by the package');
    assert.match(readFileSync(`/lib/systemd/system/${PKG}.service`, 'utf8'), /^ExecStart=\/usr\/bin\/qemu-net-helper daemon$/m);
    // Enabled the Debian way even without systemd running; nothing started.
    assert.ok(existsSync(`/etc/systemd/system/sockets.target.wants/${PKG}.socket`), 'the socket is enabled');
    assert.ok(!existsSync(STATE), 'nothing listens before the first request');
    const rules = readFileSync(ACL, 'utf8').split('\n').filter((l) => l.trim() && !l.trim().startsWith('#'));
    assert.deepEqual(rules, [], 'the shipped ACL allows nothing');
    const conffiles = spawnSync('dpkg-query', ['-W', '-f=${Conffiles}', PKG], { encoding: 'utf8' }).stdout;
    assert.match(conffiles, /\/etc\/qemu-net-helper\/bridge\.conf /);
    assert.match(conffiles, /\/etc\/qemu-net-helper\/policies\/default\.json /);
    assert.equal(dpkgAuditClean().stdout.trim(), '', 'dpkg --audit');
    assert.equal(aptCheck().status, 0, 'apt-get check: dependencies satisfied');
    const files = debFiles();
    assert.ok(files.some((f) => f.endsWith('/libqnh-fastpath.so')), 'the C fast path is built in');
    assert.ok(files.some((f) => f.endsWith('/koffi.node')), 'koffi\'s native part');
    for (const f of files) assert.ok(!readFileSync(f).includes(ROOT), `${f} mentions the source tree ${ROOT}`);
    assert.ok(existsSync(`/usr/share/man/man8/${PKG}.8.gz`), 'manual page');
    const v = spawnSync(HELPER, ['--version'], { encoding: 'utf8', env: CLEAN_ENV });
    assert.match(v.stdout, new RegExp(`^${PKG}/${VERSION.replace(/\./g, '\\.')} `));
  });

  it('the socket-activated broker denies by default, then an unprivileged QEMU gets a tap on the allowed bridge', async () => {
    mkdirSync(STATE, { mode: 0o711 }); // the socket unit's DirectoryMode
    own(STATE);
    broker = new Activated(ns);
    await broker.listening();
    assert.match(broker.cmdline(), /systemd-socket-activate/, 'no broker runs before the first request');
    await assert.rejects(startQemu(ns, ['-netdev', `tap,id=n0,helper=${HELPER}`], CLEAN_ENV, NOBODY), /br0/);
    assert.match(broker.cmdline(), /qemu-net-helper daemon/, 'the first request started the broker');
    assert.match(broker.lines(), /broker: listening on fd 3 \(socket activation\); ACL \/etc\/qemu-net-helper\/bridge\.conf/);
    assert.match(broker.lines(), /uid=65534 .*br0.*denied/);

    // The administrator's edits: an ACL line and a profile (macvtap, VEPA on veth0).
    writeFileSync(ACL, readFileSync(ACL, 'utf8') + 'allow br0\nallow profile:lan\nallow mode:vepa\nallow dev:veth0\n');
    own(PROFILES);
    mkdirSync(PROFILES, { recursive: true });
    writeFileSync(join(PROFILES, 'lan.json'), JSON.stringify({ mode: 'vepa', dev: 'veth0' }));
    const q = await startQemu(ns, ['-netdev', `tap,id=n0,helper=${HELPER}`, '-netdev', `bridge,id=n1,br=lan,helper=${HELPER}`], CLEAN_ENV, NOBODY);
    qemus.push(q);
    const taps = tapsHeldBy(q.proc.pid!);
    assert.equal(taps.length, 1, `one tap: ${JSON.stringify(taps)}`);
    assert.equal((ns.linkDetails(taps[0]!) as { master?: string }).master, 'br0');
    assert.equal(macvtapsHeldBy(ns, q.proc.pid!).length, 1, 'and a macvtap from the profile');
    assert.ok(records().length >= 1, 'the macvtap is recorded');
  });

  it('an upgrade with live endpoints keeps them: the restarted broker re-reads the records and releases them when QEMU quits', async () => {
    const q = qemus[0]!;
    const before = records();
    aptInstall(deb2);
    assert.deepEqual(debStatus(), { status: 'ii', version: UPGRADE });
    assert.match(readFileSync(ACL, 'utf8'), /^allow br0$/m, 'the edited conffile survives the upgrade');
    // What postinst's try-restart does under systemd: a new broker, from the new files, started at once.
    await broker!.stop();
    rmSync(SOCKET, { force: true });
    broker = new Activated(ns);
    await broker.listening();
    const list = spawnSync(setprivArgs(NOBODY)[0]!, [...setprivArgs(NOBODY).slice(1), HELPER, 'list', '--json'], { encoding: 'utf8', env: CLEAN_ENV });
    assert.equal(list.status, 0, list.stderr);
    assert.match(broker.cmdline(), /qemu-net-helper daemon/);
    assert.deepEqual(records(), before, 'the records are still there');
    for (const id of before) assert.ok(list.stdout.includes(id.replace(/\.json$/, '')), `nobody's list through the new broker shows ${id}: ${list.stdout}`);
    assert.equal((ns.linkDetails(tapsHeldBy(q.proc.pid!)[0]!) as { master?: string }).master, 'br0', 'QEMU\'s tap is still on br0');
    await q.quit();
    qemus.shift();
    await eventually('the new broker releases the macvtap and its record after QEMU quit', () => records().length === 0 && !ns.links().some((l) => l.startsWith('macvtap')), 30_000);
  });

  it('remove stops nothing it should not and keeps the conffiles; purge with a live endpoint says what it left', async () => {
    const q = await startQemu(ns, ['-netdev', `bridge,id=n1,br=lan,helper=${HELPER}`], CLEAN_ENV, NOBODY);
    qemus.push(q);
    assert.equal(records().length, 1);
    await broker!.stop(); // what prerm's `deb-systemd-invoke stop` does under systemd
    broker = undefined;
    aptRemove();
    assert.equal(debStatus()?.status, 'rc', 'removed, configuration kept');
    assert.ok(existsSync(ACL), 'bridge.conf stays');
    for (const p of [HELPER, `/usr/lib/${PKG}`, `/lib/systemd/system/${PKG}.socket`, `/lib/systemd/system/${PKG}-switch.service`]) assert.ok(!existsSync(p), `${p} is gone`);
    assert.equal(records().length, 1, 'the endpoint of a running QEMU is kept');
    rmSync(PROFILES, { recursive: true, force: true }); // the administrator's own file, not the package's
    const purge = aptPurge();
    assert.match(purge.stderr + purge.stdout, /left \/run\/qemu-net-helper: endpoints still in use: ep-/);
    assert.ok(existsSync(STATE), 'the state directory of a live endpoint stays');
    assert.equal(debStatus(), null);
    assert.deepEqual(leftovers(), []);
    await q.quit();
    qemus.pop();
  });

  it('purge with no live endpoint removes the state directory too, and nothing of the package is left', () => {
    aptInstall(deb2);
    assert.equal(records().length, 1, 'the record of the QEMU that quit while no broker ran');
    assert.equal(ns.links().filter((l) => l.startsWith('macvtap')).length, 1, 'and its macvtap');
    aptPurge();
    assert.deepEqual(ns.links().filter((l) => l.startsWith('macvtap')), [], 'prerm\'s gc released the macvtap of the QEMU that quit');
    assert.ok(!existsSync(STATE), `${STATE} is gone`);
    assert.equal(debStatus(), null);
    assert.equal(spawnSync('dpkg', ['-L', PKG]).status, 1, 'dpkg -L knows nothing of it');
    assert.deepEqual(leftovers(), []);
  });

  it('is named for package.json\'s version, and lintian finds no warning or error', async () => {
    assert.match(deb1, new RegExp(`/${PKG}_${VERSION.replace(/\./g, '\\.')}_amd64\\.deb$`));
    const l = await lint;
    assert.equal(l.status, 0, `lintian:\n${l.stdout}${l.stderr}`);
  });
});
