// The registry's plug-in contract: transports match kernel implementations by
// the kind of endpoint they yield, so every candidate of the built-in policies
// pairs a kernel with a transport that can carry what it yields.
import assert from 'node:assert/strict';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { describe, it } from 'node:test';
import { kernels, transports } from '../../../src/backends/registry.js';
import type { EndpointKind } from '../../../src/backends/types.js';
import { loadPolicies } from '../../../src/policy/load.js';

describe('kernel implementations and transports', () => {
  it('every candidate of the built-in policies names a known pair whose transport accepts what the kernel yields', () => {
    const empty = mkdtempSync(join(tmpdir(), 'qnh-reg-'));
    try {
      const policies = loadPolicies(empty);
      assert.ok(policies.size >= 7);
      for (const [mode, p] of policies) {
        for (const c of p.candidates) {
          const k = kernels.get(c.kernel);
          const t = transports.get(c.transport);
          assert.ok(k, `${mode}: kernel '${c.kernel}' is registered`);
          assert.ok(t, `${mode}: transport '${c.transport}' is registered`);
          assert.ok(t.accepts(k.yields), `${mode}: ${c.transport} carries what ${c.kernel} yields (${k.yields})`);
        }
      }
    } finally {
      rmSync(empty, { recursive: true, force: true });
    }
  });

  it('each kind a kernel yields is carried by some transport, except none', () => {
    for (const k of kernels.values()) {
      const carriers = [...transports.values()].filter((t) => t.accepts(k.yields)).map((t) => t.name);
      if (k.yields === 'none') assert.deepEqual(carriers, [], `${k.name} yields nothing to carry`);
      else assert.ok(carriers.length > 0, `${k.name} (${k.yields}) has a transport`);
    }
  });

  it('transports decide on the kind alone: a new kernel yielding tap fds is carried by tap and vhost-kernel', () => {
    const tap: EndpointKind = 'tap';
    const carriers = [...transports.values()].filter((t) => t.accepts(tap)).map((t) => t.name).sort();
    assert.deepEqual(carriers, ['tap', 'vhost-kernel']);
    assert.deepEqual([...transports.values()].filter((t) => t.accepts('netdev')).map((t) => t.name), ['macvtap']);
  });
});
