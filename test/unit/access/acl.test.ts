import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import { AccessDeniedError, ConfigError } from '../../../src/errors.js';
import { authorize, checkAccess, createAclHint, decide, parseAcl, type Resource } from '../../../src/access/acl.js';
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { Caller } from '../../../src/access/caller.js';
import { configPaths } from '../../../src/host/context.js';

const root = new Caller(0, 0, [], 1);
const br = (name: string): Resource => ({ kind: 'bridge', name });

function files(map: Record<string, string>) {
  return (p: string): string => {
    if (!(p in map)) throw Object.assign(new Error('nope'), { code: 'ENOENT' });
    return map[p]!;
  };
}

describe('ACL (bridge.conf syntax)', () => {
  const fs = files({
    '/etc/a.conf': '# comment\n\n  allow br0  \nallow br1\ninclude /etc/b.conf\ninclude sub/c.conf\n',
    '/etc/b.conf': 'deny br1\n',
    '/etc/sub/c.conf': '\t# nested\nallow br2\n',
    '/etc/all.conf': 'allow all\ndeny br9\n',
    '/etc/denyall.conf': 'allow br0\ndeny all\n',
    '/etc/loop1.conf': 'include /etc/loop2.conf\n',
    '/etc/loop2.conf': 'include /etc/loop1.conf\n',
    '/etc/bad.conf': 'allow br0\npermit br1\n',
    '/etc/noarg.conf': 'allow\n',
    '/etc/longname.conf': 'allow abcdefghijklmnopq\n',
    '/etc/missing-inc.conf': 'include /etc/none.conf\n',
    '/etc/empty.conf': '',
  });

  it('parses rules, comments, blank lines and includes (relative to the including file)', () => {
    const rules = parseAcl('/etc/a.conf', fs);
    assert.deepEqual(rules.map((r) => `${r.action} ${r.name ?? 'all'} ${r.file}:${r.line}`), [
      'allow br0 /etc/a.conf:3',
      'allow br1 /etc/a.conf:4',
      'deny br1 /etc/b.conf:1',
      'allow br2 /etc/sub/c.conf:2',
    ]);
  });
  it('deny wins over allow, wherever it appears', () => {
    const rules = parseAcl('/etc/a.conf', fs);
    assert.equal(decide(rules, br('br0'), root).allowed, true);
    assert.equal(decide(rules, br('br1'), root).allowed, false);
    assert.equal(decide(rules, br('br1'), root).rule?.file, '/etc/b.conf');
    assert.equal(decide(rules, br('br2'), root).allowed, true);
  });
  it('default deny', () => {
    assert.equal(decide(parseAcl('/etc/a.conf', fs), br('br7'), root).allowed, false);
    assert.equal(decide(parseAcl('/etc/empty.conf', fs), br('br0'), root).allowed, false);
  });
  it('allow all / deny all', () => {
    const all = parseAcl('/etc/all.conf', fs);
    assert.equal(decide(all, br('anything'), root).allowed, true);
    assert.equal(decide(all, br('br9'), root).allowed, false);
    assert.equal(decide(parseAcl('/etc/denyall.conf', fs), br('br0'), root).allowed, false);
  });
  it('refusal names bridge, file and rule', () => {
    assert.throws(() => checkAccess('/etc/a.conf', 'br1', root, fs), (e: unknown) => e instanceof AccessDeniedError && /bridge 'br1' is refused by rule 'deny br1' at \/etc\/b\.conf:1/.test(e.message) && e.exitCode === 3);
    assert.throws(() => checkAccess('/etc/a.conf', 'br7', root, fs), (e: unknown) => e instanceof AccessDeniedError && /bridge 'br7' is not allowed by \/etc\/a\.conf/.test(e.message));
    assert.doesNotThrow(() => checkAccess('/etc/a.conf', 'br0', root, fs));
  });
  const bad: [string, RegExp][] = [
    ['/etc/loop1.conf', /include loop/],
    ['/etc/bad.conf', /\/etc\/bad\.conf:2: unknown command 'permit'/],
    ['/etc/noarg.conf', /\/etc\/noarg\.conf:1: 'allow' has no argument/],
    ['/etc/longname.conf', /bridge name 'abcdefghijklmnopq' is 17 bytes/],
    ['/etc/missing-inc.conf', /ACL file \/etc\/none\.conf \(included from \/etc\/missing-inc\.conf\) does not exist/],
    ['/etc/nofile.conf', /ACL file \/etc\/nofile\.conf does not exist/],
  ];
  for (const [f, re] of bad) {
    it(`rejects ${f}`, () => {
      assert.throws(() => parseAcl(f, fs), (e: unknown) => e instanceof ConfigError && re.test(e.message) && e.exitCode === 8);
    });
  }
  it('path: for a root caller flag, then environment, then the default under /etc', () => {
    assert.equal(configPaths({ acl: '/x' }, { QEMU_NET_HELPER_ACL: '/y' }, true).acl, '/x');
    assert.equal(configPaths({}, { QEMU_NET_HELPER_ACL: '/y' }, true).acl, '/y');
    assert.equal(configPaths({}, {}, true).acl, '/etc/qemu-net-helper/bridge.conf');
  });
  it('path: anyone else gets the fixed files; the environment is ignored and --acl/--config are refused', () => {
    assert.deepEqual(configPaths({}, { QEMU_NET_HELPER_ACL: '/y', QEMU_NET_HELPER_CONFIG: '/z' }, false), { acl: '/etc/qemu-net-helper/bridge.conf', config: '/etc/qemu-net-helper' });
    assert.throws(() => configPaths({ acl: '/tmp/mine.conf' }, {}, false), (e: unknown) => e instanceof AccessDeniedError && /--acl is only for root/.test(e.message));
    assert.throws(() => configPaths({ config: '/tmp/cfg' }, {}, false), (e: unknown) => e instanceof AccessDeniedError && /--config is only for root/.test(e.message));
  });
});

describe('ACL: resource kinds, users and groups', () => {
  // uid 1000 in group 100 (primary) and 27 (supplementary); uid 1001 in group 100 only.
  const alice = new Caller(1000, 100, [27], 11);
  const bob = new Caller(1001, 100, [], 12);
  const fs = files({
    '/etc/q.conf': [
      'allow br0',
      'allow br1 user=1000',
      'allow br2 group=27',
      'deny br3 user=1001',
      'allow br3',
      'allow mode:vepa user=1000,1001',
      'allow dev:eth1 group=100',
      'allow vf:enp3s0f0 user=1000',
      'allow subnet:10.213.0.0/16 user=1000',
      'allow profile:lan',
      'deny mode:nat group=100',
      '',
    ].join('\n'),
    '/etc/bad1.conf': 'allow colour:red\n',
    '/etc/bad2.conf': 'allow mode:tunnel\n',
    '/etc/bad3.conf': 'allow br0 uid=5\n',
    '/etc/bad4.conf': 'allow subnet:10.0.0.0/40\n',
  });
  const rules = parseAcl('/etc/q.conf', fs);
  const ok = (c: Caller, r: Resource): boolean => decide(rules, r, c).allowed;

  it('a rule without user= or group= is for everyone; with them, only for those', () => {
    assert.equal(ok(alice, br('br0')), true);
    assert.equal(ok(bob, br('br0')), true);
    assert.equal(ok(alice, br('br1')), true);
    assert.equal(ok(bob, br('br1')), false);
  });
  it('group= matches supplementary and primary groups', () => {
    assert.equal(ok(alice, br('br2')), true);
    assert.equal(ok(bob, br('br2')), false);
    assert.equal(ok(bob, { kind: 'dev', name: 'eth1' }), true);
  });
  it('a deny for one user wins over an allow for everyone', () => {
    assert.equal(ok(alice, br('br3')), true);
    assert.equal(ok(bob, br('br3')), false);
    assert.equal(ok(alice, { kind: 'mode', name: 'nat' }), false);
  });
  it('KIND: rules match only their kind; a bare name matches a bridge and a device', () => {
    assert.equal(ok(alice, { kind: 'mode', name: 'vepa' }), true);
    assert.equal(ok(alice, { kind: 'mode', name: 'private' }), false);
    assert.equal(ok(alice, { kind: 'dev', name: 'br0' }), true);
    assert.equal(ok(alice, { kind: 'profile', name: 'br0' }), false);
    assert.equal(ok(alice, { kind: 'vf', name: 'enp3s0f0' }), true);
    assert.equal(ok(bob, { kind: 'vf', name: 'enp3s0f0' }), false);
  });
  it('subnets must lie inside an allowed prefix', () => {
    assert.equal(ok(alice, { kind: 'subnet', name: '10.213.7.0/24' }), true);
    assert.equal(ok(alice, { kind: 'subnet', name: '10.213.0.0/16' }), true);
    assert.equal(ok(alice, { kind: 'subnet', name: '10.0.0.0/8' }), false);
    assert.equal(ok(alice, { kind: 'subnet', name: '10.214.0.5/32' }), false);
  });
  it('authorize checks every resource and names the one refused, the rule and the user', () => {
    assert.doesNotThrow(() => authorize('/etc/q.conf', rules, alice, [{ kind: 'mode', name: 'vepa' }, { kind: 'dev', name: 'eth1' }]));
    assert.throws(() => authorize('/etc/q.conf', rules, bob, [{ kind: 'mode', name: 'vepa' }, { kind: 'vf', name: 'enp3s0f0' }]),
      (e: unknown) => e instanceof AccessDeniedError && /vf 'enp3s0f0' is not allowed by \/etc\/q\.conf for uid 1001/.test(e.message) && /add 'allow vf:enp3s0f0'/.test(e.line()));
    assert.throws(() => authorize('/etc/q.conf', rules, bob, [{ kind: 'mode', name: 'nat' }]),
      (e: unknown) => e instanceof AccessDeniedError && /mode 'nat' is refused by rule 'deny mode:nat group=100' at \/etc\/q\.conf:11/.test(e.message));
  });
  const bad: [string, RegExp][] = [
    ['/etc/bad1.conf', /unknown resource kind 'colour'/],
    ['/etc/bad2.conf', /'tunnel' is not a mode/],
    ['/etc/bad3.conf', /'uid=5' is not user=NAME/],
    ['/etc/bad4.conf', /is not an IPv4 prefix/],
  ];
  for (const [f, re] of bad) {
    it(`rejects ${f}`, () => {
      assert.throws(() => parseAcl(f, fs), (e: unknown) => e instanceof ConfigError && re.test(e.message));
    });
  }
});

describe('ACL: first run', () => {
  it("a missing ACL says how to create it, and suggests including QEMU's ACL only when that exists", () => {
    const dir = mkdtempSync(join(tmpdir(), 'qnh-acl-'));
    try {
      const qemuConf = join(dir, 'qemu-bridge.conf');
      assert.equal(createAclHint('/etc/q/bridge.conf', qemuConf), "create it: echo 'allow br0' > /etc/q/bridge.conf (one 'allow BRIDGE' per line)");
      writeFileSync(qemuConf, 'allow br0\n');
      assert.match(createAclHint('/etc/q/bridge.conf', qemuConf), new RegExp(`or reuse QEMU's: echo 'include ${qemuConf}' > /etc/q/bridge.conf$`));
      const missing = join(dir, 'none.conf');
      assert.throws(() => parseAcl(missing), (e: unknown) => e instanceof ConfigError && e.line() === `ACL file ${missing} does not exist; ${createAclHint(missing)}`);
    } finally {
      rmSync(dir, { recursive: true, force: true });
    }
  });
});
