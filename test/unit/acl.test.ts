import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import { AccessDeniedError, ConfigError } from '../../src/errors.js';
import { aclPath, checkAccess, decide, parseAcl } from '../../src/helper/acl.js';

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
    assert.equal(decide(rules, 'br0').allowed, true);
    assert.equal(decide(rules, 'br1').allowed, false);
    assert.equal(decide(rules, 'br1').rule?.file, '/etc/b.conf');
    assert.equal(decide(rules, 'br2').allowed, true);
  });
  it('default deny', () => {
    assert.equal(decide(parseAcl('/etc/a.conf', fs), 'br7').allowed, false);
    assert.equal(decide(parseAcl('/etc/empty.conf', fs), 'br0').allowed, false);
  });
  it('allow all / deny all', () => {
    const all = parseAcl('/etc/all.conf', fs);
    assert.equal(decide(all, 'anything').allowed, true);
    assert.equal(decide(all, 'br9').allowed, false);
    assert.equal(decide(parseAcl('/etc/denyall.conf', fs), 'br0').allowed, false);
  });
  it('refusal names bridge, file and rule', () => {
    assert.throws(() => checkAccess('/etc/a.conf', 'br1', fs), (e: unknown) => e instanceof AccessDeniedError && /bridge 'br1' is refused by rule 'deny br1' at \/etc\/b\.conf:1/.test(e.message) && e.exitCode === 3);
    assert.throws(() => checkAccess('/etc/a.conf', 'br7', fs), (e: unknown) => e instanceof AccessDeniedError && /bridge 'br7' is not allowed by \/etc\/a\.conf/.test(e.message));
    assert.equal(checkAccess('/etc/a.conf', 'br0', fs).line, 3);
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
  it('path: flag, then environment, then the default under /etc', () => {
    assert.equal(aclPath('/x', { QEMU_NET_HELPER_ACL: '/y' }), '/x');
    assert.equal(aclPath(undefined, { QEMU_NET_HELPER_ACL: '/y' }), '/y');
    assert.equal(aclPath(undefined, {}), '/etc/qemu-net-helper/bridge.conf');
  });
});
