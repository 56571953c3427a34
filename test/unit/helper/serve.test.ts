// Which path serves a helper request, decided once for the helper and the broker.
import assert from 'node:assert/strict';
import { mkdirSync, mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, before, describe, it } from 'node:test';
import { parseHelperArgs } from '../../../src/helper/args.js';
import { takesPolicyPath } from '../../../src/helper/serve.js';

describe('serveHelperRequest: plain bridge path or policy path', () => {
  let config: string;
  before(() => {
    config = mkdtempSync(join(tmpdir(), 'qnh-serve-'));
    mkdirSync(join(config, 'profiles'));
    writeFileSync(join(config, 'profiles/lan.json'), JSON.stringify({ mode: 'vepa', dev: 'eth1' }));
    writeFileSync(join(config, 'profiles/br0.json'), JSON.stringify({ mode: 'vepa', dev: 'eth1' }));
  });
  after(() => rmSync(config, { recursive: true, force: true }));
  const policy = (argv: string[]): boolean => takesPolicyPath(parseHelperArgs(argv), config);

  it("QEMU's own call is the plain path", () => {
    assert.equal(policy(['--use-vnet', '--fd=3', '--br=br7']), false);
  });
  it('a profile named like --br makes it a policy call; only when --br was given', () => {
    assert.equal(policy(['--fd=3', '--br=lan']), true);
    assert.equal(policy(['--fd=3']), false, 'the default br0 names no profile');
  });
  it('any policy flag or the extended protocol is the policy path', () => {
    for (const flag of ['--mode=vepa', '--dev=eth1', '--mac=52:54:00:00:00:01', '--mtu=1400', '--queues=2', '--profile=lan', '--vf-pool=eth1', '--explain']) {
      assert.equal(policy(['--fd=3', '--br=br7', flag]), true, flag);
    }
    assert.equal(policy(['--socketpair=3', '--br=br7']), true);
  });
});
