// The CLI's one error style and its exit codes, through the real bin script:
// oclif's own parse errors are one `qemu-net-helper: ...` line (exit 2, the
// JSON error object with --json), help and version answer, and every code of
// the README's exit-code table is produced by a real invocation.
import assert from 'node:assert/strict';
import { spawn, spawnSync, type ChildProcess } from 'node:child_process';
import { existsSync, mkdirSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, before, describe, it } from 'node:test';
import { ExitCode } from '../../src/errors.js';
import { closeAll, runHelperLikeLibvirt } from '../lib/helper-run.js';
import { NetNs } from '../lib/netns.js';
import { BIN, ROOT } from '../lib/paths.js';
import { setprivArgs } from '../lib/qemu.js';
import { eventually } from '../lib/wait.js';

interface Outcome { code: number | null; out: string; err: string; json: any }

function parse(r: { status: number | null; stdout: string; stderr: string }): Outcome {
  let json: unknown = null;
  try { json = JSON.parse(r.stdout); } catch { /* not JSON */ }
  return { code: r.status, out: r.stdout, err: r.stderr, json };
}

/** One stderr line in our style, and with --json exactly the documented object on stdout. */
function assertOneLine(r: Outcome, code: number, what: string, json: boolean): void {
  assert.equal(r.code, code, `${what}: exit code (stderr: ${r.err})`);
  const lines = r.err.split('\n').filter(Boolean);
  assert.equal(lines.length, 1, `${what}: one stderr line, got:\n${r.err}`);
  assert.match(lines[0]!, /^qemu-net-helper: \S/, what);
  assert.doesNotMatch(r.err + r.out, /USAGE|›|FLAGS/, `${what}: no help text, no oclif box`);
  if (json) assert.deepEqual(r.json, { error: { message: lines[0]!.slice('qemu-net-helper: '.length), exitCode: code } }, `${what}: JSON error`);
  else assert.equal(r.out, '', `${what}: nothing on stdout`);
}

describe('CLI error style, help and exit codes', () => {
  let ns: NetNs;
  let dir: string;
  let env: NodeJS.ProcessEnv;
  const cli = (args: string[], extra: NodeJS.ProcessEnv = {}): Outcome =>
    parse(spawnSync('ip', ['netns', 'exec', ns.name, process.execPath, BIN, ...args], { env: { ...env, ...extra }, encoding: 'utf8' }));
  before(() => {
    ns = NetNs.create();
    ns.addBridge('br0');
    ns.ip('link', 'add', 'vA', 'type', 'veth', 'peer', 'name', 'vB');
    ns.ip('link', 'set', 'vA', 'up');
    dir = mkdtempSync(join(tmpdir(), 'qnh-cli-'));
    mkdirSync(join(dir, 'config'));
    writeFileSync(join(dir, 'bridge.conf'), 'allow br0\n');
    env = { ...process.env, QEMU_NET_HELPER_STATE_DIR: join(dir, 'state'), QEMU_NET_HELPER_CONFIG: join(dir, 'config'), QEMU_NET_HELPER_ACL: join(dir, 'bridge.conf') };
  });
  after(() => {
    // Whatever a failed assertion left: the namespace takes its links along.
    ns.destroy();
    rmSync(dir, { recursive: true, force: true });
  });

  const parseErrors: { what: string; args: string[]; msg: RegExp }[] = [
    { what: 'unknown flag', args: ['up', '--mode=bridge', '--bogus'], msg: /^qemu-net-helper: unknown flag --bogus; run 'qemu-net-helper up --help' for the accepted flags$/m },
    { what: 'bad option value', args: ['up', '--mode=brige'], msg: /--mode=brige.*one of: veb/ },
    { what: 'missing flag value', args: ['up', '--mode'], msg: /flag --mode expects/ },
    { what: 'bad integer', args: ['up', '--mode=bridge', '--mtu=big'], msg: /--mtu/ },
    { what: 'missing argument', args: ['down'], msg: /^qemu-net-helper: missing argument ID \(endpoint id \(see list\)\); run 'qemu-net-helper down --help'/ },
    { what: 'unexpected argument', args: ['list', 'extra'], msg: /unexpected argument 'extra' for 'list'/ },
    { what: 'unknown command', args: ['nosuch'], msg: /^qemu-net-helper: unknown command 'nosuch'; run 'qemu-net-helper --help'/ },
    { what: 'unknown command with leading --json', args: ['--json', 'nosuch'], msg: /unknown command 'nosuch'/ },
    { what: 'unknown flag of a topic command', args: ['vhost-user', 'serve', '--bogus'], msg: /unknown flag.*qemu-net-helper vhost-user serve --help/ },
    { what: '--json on a command without JSON output', args: ['daemon', '--json'], msg: /unknown flag --json/ },
    { what: '--uplink-tx without an --uplink device', args: ['vhost-user', 'serve', '--socket', '/nonexistent/a.sock', '--br', 'br0', '--uplink-tx', 'xdp', '--config', 'none'], msg: /^qemu-net-helper: --uplink-tx xdp is for an --uplink device/m },
  ];
  for (const t of parseErrors) {
    it(`${t.what}: one line, exit 2${t.args.includes('--json') ? ', JSON error' : ''}`, () => {
      const r = cli(t.args);
      assertOneLine(r, ExitCode.USAGE, t.what, t.args.includes('--json'));
      assert.match(r.err, t.msg);
      if (!t.args.includes('--json') && t.args[0] !== 'vhost-user') {
        // The same failure with --json: the documented object, same code, same line.
        const j = cli([...t.args, '--json']);
        assertOneLine(j, ExitCode.USAGE, `${t.what} --json`, true);
      }
    });
  }

  it('-h, --help, help, help CMD, CMD -h print help; -v and --version the version; all exit 0', () => {
    const version = JSON.parse(readFileSync(join(ROOT, 'package.json'), 'utf8')).version as string;
    for (const args of [['-h'], ['--help'], ['help']]) {
      const r = cli(args);
      assert.equal(r.code, 0, `${args.join(' ')}: ${r.err}`);
      assert.match(r.out, /USAGE[\s\S]*COMMANDS[\s\S]*\bup\b/, args.join(' '));
    }
    for (const args of [['help', 'up'], ['up', '-h'], ['up', '--help'], ['help', 'vhost-user', 'serve']]) {
      const r = cli(args);
      assert.equal(r.code, 0, `${args.join(' ')}: ${r.err}`);
      assert.match(r.out, new RegExp(`USAGE\\s+\\$ qemu-net-helper ${args.includes('up') ? 'up' : 'vhost-user serve'} `), args.join(' '));
    }
    for (const args of [['-v'], ['--version']]) {
      const r = cli(args);
      assert.equal(r.code, 0, r.err);
      assert.match(r.out, new RegExp(`^qemu-net-helper/${version.replace(/\./g, '\\.')} `));
    }
  });

  it('--json before the command goes to the command, not to the helper', () => {
    const r = cli(['--json', 'list']);
    assert.equal(r.code, 0, r.err);
    assert.deepEqual(r.json, { endpoints: [], vfClaims: [] });
  });

  it('defaults admins expect: up needs --mode or --profile; macvtap MACs are 52:54:00; --br names the bridge as for the helper', () => {
    const bare = cli(['up', '--json']);
    assertOneLine(bare, ExitCode.USAGE, 'up with no flags', true);
    assert.match(bare.err, /up needs --mode or --profile/);
    assert.deepEqual(ns.links().sort(), ['br0', 'lo', 'vA', 'vB'], 'nothing made');
    const m = cli(['up', '--mode=vepa', '--dev=vA', '--id=mv1', '--json']);
    assert.equal(m.code, 0, m.err);
    assert.match(m.json.endpoint.mac, /^52:54:00:[0-9a-f]{2}:[0-9a-f]{2}:[0-9a-f]{2}$/);
    assert.equal((ns.linkDetails(m.json.endpoint.ifname) as { address: string }).address, m.json.endpoint.mac);
    assert.equal(cli(['down', 'mv1']).code, 0);
    const b = cli(['up', '--mode=bridge', '--br=br0', '--id=b1', '--json']);
    assert.equal(b.code, 0, b.err);
    assert.equal((ns.linkDetails(b.json.endpoint.ifname) as { master: string }).master, 'br0');
    assert.equal(cli(['down', 'b1']).code, 0);
  });

  it('the broker refuses to start without a readable ACL, with one line saying how to create it', () => {
    const acl = join(dir, 'no-acl.conf');
    const socket = join(dir, 'broker.sock');
    const r = cli(['daemon', '--socket', socket, '--acl', acl, '--config', join(dir, 'config')]);
    assertOneLine(r, ExitCode.CONFIG, 'daemon without an ACL', false);
    assert.match(r.err, new RegExp(`ACL file ${acl} does not exist; create it: echo 'allow br0' > ${acl}`));
    assert.equal(existsSync(socket), false, 'no socket: nothing listens');
  });

  it('every code of the README table is produced by a real invocation, and the table is the code\'s', async () => {
    const readme = readFileSync(join(ROOT, 'README.md'), 'utf8');
    const table = /\n## Exit codes\n([\s\S]*?)\n## /.exec(readme)?.[1] ?? '';
    const documented = [...table.matchAll(/^\| (\d+) \|/gm)].map((m) => Number(m[1]));
    assert.deepEqual(documented, Object.values(ExitCode), 'README exit-code table = errors.ts ExitCode');

    const seen = new Map<number, string>();
    const expect = (code: number, what: string, r: Outcome, json = false): void => {
      if (code === 0) assert.equal(r.code, 0, `${what}: ${r.err}`);
      else assertOneLine(r, code, what, json);
      seen.set(code, what);
    };
    expect(ExitCode.OK, 'list', cli(['list', '--json']));

    // 1: a record we wrote that does not parse any more is damage, not user error.
    mkdirSync(join(dir, 'state/endpoints'), { recursive: true, mode: 0o700 });
    writeFileSync(join(dir, 'state/endpoints/broken.json'), 'garbage\n', { mode: 0o600 });
    const broken = cli(['down', 'broken', '--json']);
    expect(ExitCode.INTERNAL, 'down of an unparsable record', broken, true);
    assert.match(broken.err, /broken\.json is not valid JSON.*please report it/);
    rmSync(join(dir, 'state/endpoints/broken.json'));

    expect(ExitCode.USAGE, 'unknown flag', cli(['up', '--bogus', '--json']), true);

    const denied = await runHelperLikeLibvirt(ns, ['--br=vB', '--fd={FD}'], env);
    closeAll(denied.fds);
    expect(ExitCode.ACCESS_DENIED, 'bridge not in the ACL', { code: denied.code, out: denied.stdout, err: denied.stderr, json: null });

    // 4: an unprivileged user, no broker.
    const nobody = spawnSync(setprivArgs({ uid: 65534, gid: 65534 })[0]!, [...setprivArgs({ uid: 65534, gid: 65534 }).slice(1), process.execPath, BIN, 'list', '--json'],
      { env: { PATH: process.env.PATH, HOME: '/nonexistent', QEMU_NET_HELPER_BROKER: join(dir, 'no-broker.sock') }, encoding: 'utf8' });
    expect(ExitCode.PERMISSION, 'unprivileged list without a broker', parse(nobody), true);

    const typo = cli(['down', 'no-such-endpoint', '--json']);
    expect(ExitCode.NOT_FOUND, 'down of an id never made', typo, true);
    assert.match(typo.err, /no endpoint no-such-endpoint/);

    const badFd = await runHelperLikeLibvirt(ns, ['--br=br0', '--fd=77'], env);
    expect(ExitCode.BAD_FD, 'helper --fd not open', { code: badFd.code, out: badFd.stdout, err: badFd.stderr, json: null });

    const noTun = await runHelperLikeLibvirt(ns, ['--br=br0', '--fd={FD}'], { ...env, QEMU_NET_HELPER_TUN: '/nonexistent/tun' });
    expect(ExitCode.UNSUPPORTED, 'no tun device', { code: noTun.code, out: noTun.stdout, err: noTun.stderr, json: null });

    const ghost = cli(['up', '--profile=ghost', '--json']);
    expect(ExitCode.CONFIG, 'missing profile', ghost, true);
    assert.match(ghost.err, /no profile 'ghost'/);

    // 9: a passthru macvtap owns its parent alone.
    const first = cli(['up', '--mode=passthrough', '--dev=vA', '--id=pt1', '--json']);
    assert.equal(first.code, 0, first.err);
    expect(ExitCode.EXHAUSTED, 'second passthru on one parent', cli(['up', '--mode=passthrough', '--dev=vA', '--json']), true);
    assert.equal(cli(['down', 'pt1']).code, 0);

    // 10: the NAT lock held by a stuck process: setup gives up after its timeout instead of hanging.
    mkdirSync(join(dir, 'state/nat'), { recursive: true });
    const holder: ChildProcess = spawn('flock', [join(dir, 'state/nat/lock'), 'sleep', '600'], { stdio: 'ignore' });
    try {
      await eventually('flock to hold the NAT lock', () => spawnSync('flock', ['-n', join(dir, 'state/nat/lock'), 'true']).status === 1, 30_000);
      const stuck = cli(['up', '--mode=nat', '--dev=qnhnat7', '--json']);
      expect(ExitCode.SETUP_FAILED, 'NAT lock held by a stuck process', stuck, true);
      assert.match(stuck.err, /has held .*lock for more than/);
    } finally {
      holder.kill('SIGKILL');
    }
    assert.deepEqual(ns.links().filter((l) => !['lo', 'br0', 'vA', 'vB'].includes(l)), [], 'the failures left no link');
    assert.deepEqual([...seen.keys()].sort((a, b) => a - b), Object.values(ExitCode), 'every documented code was produced');
  });
});
