// The proof that matters to a QEMU user: a guest whose NIC comes from our
// helper reaches the bridge. Real QEMU (TCG) runs the helper itself.
import assert from 'node:assert/strict';
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { describe, it } from 'node:test';
import { bootGuest, guestSkipReason } from '../lib/guest.js';
import { withNetNs } from '../lib/netns.js';
import { BIN } from '../lib/paths.js';

const skip = guestSkipReason() ?? false;

describe('guest on a helper-made tap', { skip }, () => {
  it('pings the bridge address (bridge MTU 1400, vnet header on)', async (t) => {
    const dir = mkdtempSync(join(tmpdir(), 'qnh-hg-'));
    try {
      const acl = join(dir, 'bridge.conf');
      writeFileSync(acl, 'allow br0\n');
      await withNetNs(async (ns) => {
        ns.addBridge('br0', '10.0.0.1/24', 1400);
        const r = await bootGuest({
          ns,
          args: ['-netdev', `bridge,id=n0,br=br0,helper=${BIN} helper --acl=${acl}`, '-device', 'virtio-net-pci,netdev=n0'],
          settings: { mode: 'ping', ip: '10.0.0.2/24', peer: '10.0.0.1', count: 3, mtu: 1400 },
        });
        const ok = r.markers.find((m) => m.name === 'QNH-PING-OK');
        assert.ok(ok, `no QNH-PING-OK: ${r.markers.map((m) => m.name).join(' ')}\n${r.output}\n${r.stderr}`);
        assert.equal(r.exitCode, 0);
        // The tap died with QEMU: only the bridge is left.
        assert.deepEqual(ns.links().sort(), ['br0', 'lo']);
        t.diagnostic(`spawn->PING-OK ${ok.atMs} ms`);
      });
    } finally {
      rmSync(dir, { recursive: true, force: true });
    }
  });
});
