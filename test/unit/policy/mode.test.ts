// The mode parsed once: what each kind means for the request and the ACL.
import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import { Caller } from '../../../src/access/caller.js';
import { resourcesOf } from '../../../src/access/resources.js';
import { MODES } from '../../../src/backends/types.js';
import { UsageError } from '../../../src/errors.js';
import { parseHelperArgs } from '../../../src/helper/args.js';
import { modeOf, parseMode } from '../../../src/policy/mode.js';
import { buildRequest } from '../../../src/policy/request.js';

const user = new Caller(1000, 1000, [], 1);
const root = new Caller(0, 0, [], 1);

describe('parsed mode', () => {
  it('every mode parses to its kind; nothing else does', () => {
    for (const m of MODES) {
      const p = parseMode(m);
      assert.equal(p.name, m);
      assert.equal(p.kind, m === 'bridge' ? 'bridge' : m === 'nat' ? 'nat' : 'uplink');
    }
    for (const bad of ['', 'Bridge', 'nat ', 'passthru', '__proto__', 'toString']) {
      assert.throws(() => parseMode(bad), (e: unknown) => e instanceof UsageError && e.message === `unknown mode '${bad}'`);
    }
  });
  it('nat carries its default bridge and subnet', () => {
    const p = modeOf('nat');
    assert.ok(p.kind === 'nat');
    assert.equal(p.defaultBridge, 'qnhnat0');
    assert.equal(p.defaultSubnet, '10.213.0.0/16');
  });
  it('--br is the device only in bridge mode without a profile', () => {
    assert.equal(buildRequest(parseHelperArgs(['--fd=3', '--br=br7']), null).req.dev, 'br7');
    assert.equal(buildRequest(parseHelperArgs(['--fd=3', '--br=br7', '--mode=vepa']), null).req.dev, undefined);
    assert.equal(buildRequest(parseHelperArgs(['--fd=3', '--br=br7', '--mode=nat']), null).req.dev, undefined);
  });
  it('the ACL resources follow the kind', () => {
    const res = (argv: string[], caller = user): string[] => {
      const { mode, req } = buildRequest(parseHelperArgs(['--fd=3', ...argv]), null);
      return resourcesOf(mode, req, null, caller).map((r) => `${r.kind}:${r.name}`);
    };
    assert.deepEqual(res(['--br=br7']), ['bridge:br7']);
    assert.deepEqual(res(['--mode=vepa', '--dev=eth1']), ['mode:vepa', 'dev:eth1']);
    assert.deepEqual(res(['--mode=nat']), ['mode:nat', 'bridge:qnhnat0', 'subnet:10.213.0.0/16']);
    assert.deepEqual(res(['--mode=nat', '--dev=natbr1']), ['mode:nat', 'dev:natbr1', 'subnet:10.213.0.0/16']);
    assert.deepEqual(res(['--mode=nat'], root), ['bridge:qnhnat0']);
  });
});
