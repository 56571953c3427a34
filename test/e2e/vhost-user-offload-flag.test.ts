// `vhost-user serve --offloads on|off` through the real command: what a
// front-end is offered over the socket, and the final counters' offload fields.
import assert from 'node:assert/strict';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, before, describe, it } from 'node:test';
import { Serve } from '../lib/serve.js';
import { VhostFrontend } from '../lib/vhost-frontend.js';
import { Feature, featureBit, Req } from '../../src/vhost-user/protocol/index.js';

const OFFLOADS = [Feature.CSUM, Feature.GUEST_CSUM, Feature.HOST_TSO4, Feature.HOST_TSO6, Feature.GUEST_TSO4, Feature.GUEST_TSO6, Feature.HOST_ECN, Feature.GUEST_ECN]
  .reduce((m, b) => m | featureBit(b), 0n);

describe('vhost-user serve --offloads', () => {
  let dir: string;
  before(() => { dir = mkdtempSync(join(tmpdir(), 'qnh-offflag-')); });
  after(() => rmSync(dir, { recursive: true, force: true }));

  for (const [flag, offered] of [[[], true], [['--offloads', 'on'], true], [['--offloads', 'off'], false]] as const) {
    it(`${flag.join(' ') || 'default'}: offloads ${offered ? '' : 'not '}offered`, async () => {
      const sock = join(dir, `p-${flag.join('') || 'default'}.sock`);
      const s = new Serve(['--socket', sock, ...flag]);
      try {
        await s.ready([sock]);
        const fe = await VhostFrontend.connectReady(sock, 10000);
        try {
          const f = await fe.callU64(Req.GET_FEATURES);
          assert.equal(f & OFFLOADS, offered ? OFFLOADS : 0n, `features 0x${f.toString(16)}`);
        } finally {
          fe.close();
        }
      } finally {
        const { code, final } = await s.stop();
        assert.equal(code, 0);
        assert.ok(final.every((p) => 'gsoPassed' in p && 'gsoSegmented' in p && 'csumCompleted' in p && 'badOffload' in p), JSON.stringify(final));
      }
    });
  }

  it('--offloads with another value is a usage error', async () => {
    const s = new Serve(['--socket', join(dir, 'bad.sock'), '--offloads', 'maybe']);
    assert.equal(await s.exited, 2, s.log());
    assert.match(s.log(), /offloads/);
  });
});
