// NSS lookups against the real resolver: /etc/passwd accounts, missing and
// hostile names, and accounts that live outside /etc/passwd (libnss-extrausers
// in a private mount namespace, standing in for LDAP/sssd), added and removed.
import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import { mkdirSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { describe, it } from 'node:test';
import { fileURLToPath } from 'node:url';
import { lookupGroup, lookupUser } from '../../../src/sys/nss.js';

const dist = (p: string): string => fileURLToPath(new URL(`../../../src/${p}`, import.meta.url));

describe('NSS lookups', () => {
  it('finds root, nobody and their groups by name and by number', () => {
    assert.deepEqual(lookupUser('root'), { name: 'root', uid: 0, gid: 0 });
    assert.deepEqual(lookupUser('0'), { name: 'root', uid: 0, gid: 0 });
    assert.equal(lookupUser('nobody')?.uid, 65534);
    assert.equal(lookupGroup('root')?.gid, 0);
    assert.equal(lookupGroup('nogroup')?.gid, 65534);
    assert.equal(lookupGroup('65534')?.name, 'nogroup');
  });

  it('answers null for accounts that do not exist', () => {
    assert.equal(lookupUser('qnh-no-such-user'), null);
    assert.equal(lookupGroup('qnh-no-such-group'), null);
    assert.equal(lookupUser('4294000000'), null);
  });

  it('never hands getent an option or a field separator', () => {
    for (const hostile of ['-s', '--service=files', 'root:x', 'root\nnobody', '', ' root', 'a'.repeat(300)]) {
      assert.equal(lookupUser(hostile), null, JSON.stringify(hostile));
      assert.equal(lookupGroup(hostile), null, JSON.stringify(hostile));
    }
  });
});

const asRoot = process.getuid?.() === 0 ? false : 'needs root (a private mount namespace)';
const haveExtrausers = spawnSync('sh', ['-c', 'ls /usr/lib/libnss_extrausers.so.2 /lib/*/libnss_extrausers.so.2 2>/dev/null'], { encoding: 'utf8' }).stdout.trim() !== '';

describe('NSS lookups of accounts outside /etc/passwd (extrausers, as LDAP/sssd would be)', { skip: asRoot || (haveExtrausers ? false : 'libnss-extrausers is not installed (scripts/setup.sh)') }, () => {
  // The probe runs in a mount namespace where nsswitch.conf also asks
  // extrausers and /var/lib/extrausers is our directory: the host sees none of it.
  const probe = `
    const { lookupUser, lookupGroup } = await import(${JSON.stringify(dist('sys/nss.js'))});
    const { Caller } = await import(${JSON.stringify(dist('access/caller.js'))});
    const { decide, parseAcl } = await import(${JSON.stringify(dist('access/acl.js'))});
    const rules = parseAcl(process.env.ACL);
    const allowed = (caller, name) => decide(rules, { kind: 'bridge', name }, caller).allowed;
    const first = new Caller(61234, 61234, [61235], 1);
    const out = { user: lookupUser('ldapalice'), sssd: lookupUser('bob@example.com'), group: lookupGroup('ldapvm'),
      byUser: allowed(first, 'br0'), byGroup: allowed(first, 'br1') };
    process.stdout.write(JSON.stringify(out) + '\\n');
    // The account is removed between two requests: the next request's Caller no longer finds it.
    const { readFileSync, writeFileSync } = await import('node:fs');
    const pw = '/var/lib/extrausers/passwd';
    writeFileSync(pw, readFileSync(pw, 'utf8').split('\\n').filter((l) => !l.startsWith('ldapalice:')).join('\\n'));
    const next = new Caller(61234, 61234, [61235], 1);
    process.stdout.write(JSON.stringify({ user: lookupUser('ldapalice'), byUser: allowed(next, 'br0'), byGroup: allowed(next, 'br1') }) + '\\n');`;

  it('finds them by name, ACL rules name them, and a removed account counts from the next request on', () => {
    const dir = mkdtempSync(join(tmpdir(), 'qnh-nss-'));
    try {
      const eu = join(dir, 'extrausers');
      mkdirSync(eu);
      writeFileSync(join(eu, 'passwd'), 'ldapalice:x:61234:61234::/nonexistent:/usr/sbin/nologin\nbob@example.com:x:61236:61234::/nonexistent:/usr/sbin/nologin\n');
      writeFileSync(join(eu, 'group'), 'ldapvm:x:61235:ldapalice\n');
      const nss = readFileSync('/etc/nsswitch.conf', 'utf8').replace(/^(passwd|group):.*$/gm, '$1: files extrausers');
      writeFileSync(join(dir, 'nsswitch.conf'), nss);
      writeFileSync(join(dir, 'bridge.conf'), 'allow br0 user=ldapalice\nallow br1 group=ldapvm\nallow br2 user=bob@example.com\n');
      const script = `mount --bind "$DIR/nsswitch.conf" /etc/nsswitch.conf && mount --bind "$DIR/extrausers" /var/lib/extrausers || exit 9
        exec "$NODE" --input-type=module -e "$PROBE"`;
      const r = spawnSync('unshare', ['-m', '--propagation', 'private', 'sh', '-c', script], {
        encoding: 'utf8', env: { ...process.env, PROBE: probe, DIR: dir, NODE: process.execPath, ACL: join(dir, 'bridge.conf') }, timeout: 120_000,
      });
      assert.equal(r.status, 0, r.stderr);
      const [a, b] = r.stdout.trim().split('\n').map((l) => JSON.parse(l));
      assert.deepEqual(a.user, { name: 'ldapalice', uid: 61234, gid: 61234 });
      assert.deepEqual(a.sssd, { name: 'bob@example.com', uid: 61236, gid: 61234 });
      assert.deepEqual(a.group, { name: 'ldapvm', gid: 61235, members: ['ldapalice'] });
      assert.equal(a.byUser, true);
      assert.equal(a.byGroup, true);
      assert.equal(b.user, null);
      assert.equal(b.byUser, false, 'a removed account no longer matches');
      assert.equal(b.byGroup, true, 'the group still exists');
      assert.equal(lookupUser('ldapalice'), null, 'the host never saw the account');
    } finally {
      rmSync(dir, { recursive: true, force: true });
    }
  });
});
