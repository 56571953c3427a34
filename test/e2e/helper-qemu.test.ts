// Real QEMU 7.2 runs our helper in each of the ways users configure it.
import assert from 'node:assert/strict';
import { writeFileSync, mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, before, describe, it } from 'node:test';
import { NetNs } from '../lib/netns.js';
import { BIN } from '../lib/paths.js';
import { haveQemu, startQemu, tapsHeldBy } from '../lib/qemu.js';

const skip = haveQemu() ? false : 'qemu-system-x86_64 is not installed';

describe('QEMU runs the helper', { skip }, () => {
  let ns: NetNs;
  let dir: string;
  let acl: string;
  before(() => {
    ns = NetNs.create();
    ns.addBridge('br0', '10.99.0.1/24', 1400);
    ns.addBridge('brx');
    dir = mkdtempSync(join(tmpdir(), 'qnh-acl-'));
    acl = join(dir, 'bridge.conf');
    writeFileSync(acl, '# test ACL\nallow br0\nallow brx\n');
  });
  after(() => {
    ns.destroy();
    rmSync(dir, { recursive: true, force: true });
  });

  function assertTapOnBridge(pid: number, bridge: string, mtu: number): string {
    const taps = tapsHeldBy(pid);
    assert.equal(taps.length, 1, `QEMU should hold exactly one tap, holds ${JSON.stringify(taps)}`);
    const d = ns.linkDetails(taps[0]!) as { master?: string; mtu: number; address: string; linkinfo: { info_kind: string; info_data: { type: string; vnet_hdr: boolean; pi: boolean } } };
    assert.equal(d.master, bridge);
    assert.equal(d.mtu, mtu);
    assert.equal(d.linkinfo.info_kind, 'tun');
    assert.equal(d.linkinfo.info_data.type, 'tap');
    assert.equal(d.linkinfo.info_data.vnet_hdr, true);
    assert.equal(d.linkinfo.info_data.pi, false);
    assert.match(d.address, /^fe:/);
    return taps[0]!;
  }

  async function tapGoneAfterQuit(q: Awaited<ReturnType<typeof startQemu>>, tap: string): Promise<void> {
    await q.quit();
    assert.ok(!ns.links().includes(tap), `${tap} should die with QEMU`);
  }

  it('exec form: -netdev tap,helper=PATH (default bridge br0)', async () => {
    const q = await startQemu(ns, ['-netdev', `tap,id=n0,helper=${BIN}`], { ...process.env, QEMU_NET_HELPER_ACL: acl });
    const tap = assertTapOnBridge(q.proc.pid!, 'br0', 1400);
    await tapGoneAfterQuit(q, tap);
  });

  it('sh -c form: -netdev bridge,br=brx,helper="PATH helper --acl=FILE"', async () => {
    const q = await startQemu(ns, ['-netdev', `bridge,id=n0,br=brx,helper=${BIN} helper --acl=${acl}`]);
    const tap = assertTapOnBridge(q.proc.pid!, 'brx', 1500);
    await tapGoneAfterQuit(q, tap);
  });

  it('QMP netdev_add hotplug', async () => {
    const q = await startQemu(ns, [], { ...process.env, QEMU_NET_HELPER_ACL: acl });
    assert.deepEqual(tapsHeldBy(q.proc.pid!), []);
    const r = await q.qmp.cmd('netdev_add', { type: 'tap', id: 'h1', helper: BIN });
    assert.ok('return' in r, JSON.stringify(r));
    const tap = assertTapOnBridge(q.proc.pid!, 'br0', 1400);
    const r2 = await q.qmp.cmd('netdev_add', { type: 'bridge', id: 'h2', br: 'brx', helper: BIN });
    assert.ok('return' in r2, JSON.stringify(r2));
    assert.equal(tapsHeldBy(q.proc.pid!).length, 2);
    await tapGoneAfterQuit(q, tap);
  });

  it('QEMU reports a refusal with our message and exits 1', async () => {
    await assert.rejects(
      startQemu(ns, ['-netdev', `bridge,id=n0,br=nope0,helper=${BIN}`], { ...process.env, QEMU_NET_HELPER_ACL: acl }),
      /access denied: bridge 'nope0' is not allowed by .*bridge\.conf/,
    );
  });
});
