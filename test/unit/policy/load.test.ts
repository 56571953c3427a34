import assert from 'node:assert/strict';
import { mkdirSync, mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, before, describe, it } from 'node:test';
import { ConfigError, UsageError } from '../../../src/errors.js';
import { parseHelperArgs } from '../../../src/helper/args.js';
import { loadPolicies, loadProfile } from '../../../src/policy/load.js';
import { buildRequest } from '../../../src/policy/request.js';
import { MODES } from '../../../src/backends/types.js';

describe('policies and profiles', () => {
  let dir: string;
  before(() => {
    dir = mkdtempSync(join(tmpdir(), 'qnh-pol-'));
    mkdirSync(join(dir, 'policies'));
    mkdirSync(join(dir, 'profiles'));
  });
  after(() => rmSync(dir, { recursive: true, force: true }));

  it('the built-in policy defines every mode, each with candidates', () => {
    const p = loadPolicies(join(dir, 'none'));
    for (const m of MODES) assert.ok(p.get(m)?.candidates.length, `mode ${m}`);
    assert.match(p.get('bridge')!.source, /policies\/default\.json$/);
  });

  it('a user policy replaces a built-in mode', () => {
    writeFileSync(join(dir, 'policies/site.json'), JSON.stringify({ version: 1, modes: { private: { candidates: [{ kernel: 'bridge', transport: 'tap' }] } } }));
    const p = loadPolicies(dir);
    assert.equal(p.get('private')!.candidates[0]!.kernel, 'bridge');
    assert.match(p.get('private')!.source, /site\.json$/);
    assert.match(p.get('vepa')!.source, /default\.json$/);
    rmSync(join(dir, 'policies/site.json'));
  });

  const badPolicies: [string, unknown, RegExp][] = [
    ['wrong version', { version: 2, modes: {} }, /bad\.json: version: /],
    ['unknown mode', { version: 1, modes: { teleport: { candidates: [{ kernel: 'x', transport: 'tap' }] } } }, /bad\.json: modes: Unrecognized key: "teleport"/],
    ['unknown transport', { version: 1, modes: { bridge: { candidates: [{ kernel: 'bridge', transport: 'carrier-pigeon' }] } } }, /bad\.json: modes\.bridge\.candidates\.0\.transport/],
    ['no candidates', { version: 1, modes: { bridge: { candidates: [] } } }, /bad\.json: modes\.bridge\.candidates/],
    ['unknown field', { version: 1, modes: {}, extra: true }, /bad\.json: .*extra/],
  ];
  for (const [name, content, re] of badPolicies) {
    it(`an invalid policy file is an error naming file and field: ${name}`, () => {
      writeFileSync(join(dir, 'policies/bad.json'), JSON.stringify(content));
      try {
        assert.throws(() => loadPolicies(dir), (e: unknown) => e instanceof ConfigError && re.test(e.message) && e.exitCode === 8);
      } finally {
        rmSync(join(dir, 'policies/bad.json'));
      }
    });
  }
  it('a policy file that is not JSON', () => {
    writeFileSync(join(dir, 'policies/bad.json'), '{ nope');
    try {
      assert.throws(() => loadPolicies(dir), /bad\.json is not valid JSON/);
    } finally {
      rmSync(join(dir, 'policies/bad.json'));
    }
  });

  it('profiles: loaded by name, validated, absent is null', () => {
    writeFileSync(join(dir, 'profiles/lan.json'), JSON.stringify({ mode: 'vepa', dev: 'eth1', mac: '52:54:00:aa:bb:cc', mtu: 9000 }));
    writeFileSync(join(dir, 'profiles/badmac.json'), JSON.stringify({ mode: 'vepa', mac: 'zz' }));
    assert.equal(loadProfile(dir, 'lan')!.dev, 'eth1');
    assert.equal(loadProfile(dir, 'nothere'), null);
    assert.equal(loadProfile(dir, '../etc/passwd'), null);
    assert.throws(() => loadProfile(dir, 'badmac'), (e: unknown) => e instanceof ConfigError && /badmac\.json: mac: .*MAC address/.test(e.message));
  });

  it('flags win over the profile, the profile over defaults', () => {
    const profile = { mode: 'vepa' as const, dev: 'eth1', mac: '52:54:00:aa:bb:cc', mtu: 9000 };
    const a = parseHelperArgs(['--fd=3', '--br=lan', '--mtu=1400']);
    const { mode, req } = buildRequest(a, profile);
    assert.deepEqual(mode, { kind: 'uplink', name: 'vepa' });
    assert.equal(req.dev, 'eth1');
    assert.equal(req.mtu, 1400);
    assert.equal(req.mac!.toString('hex'), '525400aabbcc');
    const b = buildRequest(parseHelperArgs(['--fd=3', '--br=lan', '--mode=private', '--dev=eth2']), profile);
    assert.equal(b.mode.name, 'private');
    assert.equal(b.req.dev, 'eth2');
  });
  it('defaults: bridge mode on --br', () => {
    const { mode, req } = buildRequest(parseHelperArgs(['--fd=3', '--br=br7']), null);
    assert.equal(mode.kind, 'bridge');
    assert.equal(req.dev, 'br7');
  });
  it('bad mode and non-unicast MAC are usage errors', () => {
    assert.throws(() => buildRequest(parseHelperArgs(['--fd=3', '--mode=teleport']), null), (e: unknown) => e instanceof UsageError && /unknown mode 'teleport'/.test(e.message));
    assert.throws(() => buildRequest(parseHelperArgs(['--fd=3', '--mac=01:00:5e:00:00:01']), null), (e: unknown) => e instanceof UsageError && /multicast/.test(e.message));
    assert.throws(() => buildRequest(parseHelperArgs(['--fd=3', '--mac=00:00:00:00:00:00']), null), /is all zero/);
  });
});
