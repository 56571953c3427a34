// A hostile front-end that shrinks its guest memory file after SET_MEM_TABLE
// and then kicks would make the data path's next access a SIGBUS, killing
// every port. The back-end seals the memory against shrinking (or finds it
// sealed) before mapping it, and refuses memory nobody can seal.
import assert from 'node:assert/strict';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, before, describe, it } from 'node:test';
import { Serve } from '../lib/serve.js';
import { ftruncate, testFrame, VhostFrontend } from '../lib/vhost-frontend.js';
import { F_SEAL_SHRINK, getSeals } from '../../src/sys/seals.js';

process.setMaxListeners(40);

describe('hostile front-end: shrinking guest memory', () => {
  let dir: string;
  before(() => { dir = mkdtempSync(join(tmpdir(), 'qnh-seal-')); });
  after(() => rmSync(dir, { recursive: true, force: true }));

  it('memory is sealed on SET_MEM_TABLE: the truncation fails, kicks are harmless, the other port goes on', async () => {
    const [a, b] = [join(dir, 'a.sock'), join(dir, 'b.sock')];
    const s = new Serve(['--socket', a, '--socket', b]);
    let good: VhostFrontend | undefined;
    let bad: VhostFrontend | undefined;
    try {
      await s.ready([a, b]);
      good = await VhostFrontend.connectReady(a);
      await good.handshake({ memory: { name: 'qnh-seal-good' } });
      bad = await VhostFrontend.connectReady(b);
      await bad.handshake({ memory: { name: 'qnh-seal-bad' } });
      const fd = bad.guest!.fd;
      assert.ok(getSeals(fd) & F_SEAL_SHRINK, 'the back-end sealed the memfd against shrinking');
      // What a hostile front-end would do: drop the pages under the mapping, then kick.
      assert.throws(() => ftruncate(fd, 0), /EPERM/);
      assert.throws(() => ftruncate(fd, 4096), /EPERM/);
      await bad.transmit([testFrame(7, 0), testFrame(7, 1)]);
      await good.receive(2);
      // The front-end may still grow its own memory: only shrinking is sealed.
      ftruncate(fd, bad.guest!.size + 4096);
      await good.transmit([testFrame(8, 0)]);
      await bad.receive(1);
      assert.equal(s.proc.exitCode, null, 'still running');
    } finally {
      good?.close();
      bad?.close();
      const { code } = await s.stop();
      assert.equal(code, 0, s.log());
    }
  });

  it('memory nobody can seal is refused (by default) with the reason; the other port is untouched', async () => {
    const [a, b] = [join(dir, 'c.sock'), join(dir, 'd.sock')];
    const s = new Serve(['--socket', a, '--socket', b]);
    let good: VhostFrontend | undefined;
    let bad: VhostFrontend | undefined;
    try {
      await s.ready([a, b]);
      good = await VhostFrontend.connectReady(a);
      await good.handshake({ memory: { name: 'qnh-seal-good2' } });
      bad = await VhostFrontend.connectReady(b);
      // A memfd made without MFD_ALLOW_SEALING (as DPDK --no-huge makes its memory).
      await assert.rejects(bad.handshake({ memory: { name: 'qnh-unsealable', sealable: false } }));
      assert.ok(await s.waitLog(/port 1: .*not sealed against shrinking \(F_SEAL_SHRINK\) and cannot be sealed/), s.log());
      assert.doesNotMatch(s.log(), /port 0: connection closed/);
      // Port 0 keeps working: its frames reach a fresh, well-behaved port 1.
      bad.close();
      bad = await VhostFrontend.connectReady(b);
      await bad.handshake({ memory: { name: 'qnh-seal-ok' } });
      await good.transmit([testFrame(9, 0)]);
      await bad.receive(1);
    } finally {
      good?.close();
      bad?.close();
      const { code } = await s.stop();
      assert.equal(code, 0, s.log());
    }
  });

  it('why: with --allow-unsealed-memory, the same truncation and kick kill the whole process (SIGBUS)', async () => {
    const a = join(dir, 'e.sock');
    const s = new Serve(['--socket', a, '--allow-unsealed-memory']);
    let bad: VhostFrontend | undefined;
    try {
      await s.ready([a]);
      bad = await VhostFrontend.connectReady(a);
      await bad.handshake({ memory: { name: 'qnh-unsealed', sealable: false } });
      ftruncate(bad.guest!.fd, 0);
      // Only the kick: this process must not touch its own (now empty) mapping either.
      bad.rings[1]!.kick();
      const deadline = Date.now() + 10000;
      while (s.proc.exitCode === null && s.proc.signalCode === null && Date.now() < deadline) await new Promise((r) => setTimeout(r, 20));
      assert.equal(s.proc.signalCode, 'SIGBUS', `exit ${s.proc.exitCode} signal ${s.proc.signalCode}`);
    } finally {
      bad?.close();
      await s.stop();
    }
  });
});
