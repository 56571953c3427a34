// The helper driven the way libvirt drives it, and every class of bad input:
// exit code, one clear stderr line, nothing on stdout, nothing left behind.
import assert from 'node:assert/strict';
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, before, describe, it } from 'node:test';
import { ExitCode } from '../../src/errors.js';
import { IFF_TAP, IFF_VNET_HDR } from '../../src/sys/tun.js';
import { closeAll, runHelperLikeLibvirt } from '../lib/helper-run.js';
import { NetNs } from '../lib/netns.js';

describe('helper protocol', () => {
  let ns: NetNs;
  let dir: string;
  let acl: string;
  let env: NodeJS.ProcessEnv;
  let baseline: string[];
  before(() => {
    ns = NetNs.create();
    ns.addBridge('br0', undefined, 9000);
    ns.addBridge('denied0');
    ns.ip('link', 'add', 'veth0', 'type', 'veth', 'peer', 'name', 'veth1');
    dir = mkdtempSync(join(tmpdir(), 'qnh-proto-'));
    acl = join(dir, 'bridge.conf');
    writeFileSync(join(dir, 'more.conf'), 'allow gone0\nallow veth0\nallow denied0\n');
    writeFileSync(acl, 'allow br0\ninclude more.conf\ndeny denied0\n');
    env = { ...process.env, QEMU_NET_HELPER_ACL: acl };
    baseline = ns.links().sort();
  });
  after(() => {
    ns.destroy();
    rmSync(dir, { recursive: true, force: true });
  });

  const noLeftovers = (): void => assert.deepEqual(ns.links().sort(), baseline, 'no interface may be left behind');

  it("libvirt's order (--use-vnet --br --fd): one byte, one tap fd, attached", async () => {
    const r = await runHelperLikeLibvirt(ns, ['--use-vnet', '--br=br0', '--fd={FD}'], env);
    try {
      assert.equal(r.code, 0, r.stderr);
      assert.equal(r.stdout, '');
      assert.equal(r.stderr, '');
      assert.equal(r.bytes, 1);
      assert.equal(r.fds.length, 1);
      assert.ok(r.iff, 'TUNGETIFF must succeed on the fd');
      assert.ok(r.iff.flags & IFF_TAP);
      assert.ok(r.iff.flags & IFF_VNET_HDR);
      const d = ns.linkDetails(r.iff.name) as { master: string; mtu: number };
      assert.equal(d.master, 'br0');
      assert.equal(d.mtu, 9000);
    } finally {
      closeAll(r.fds);
    }
    noLeftovers();
  });

  it('without --use-vnet the tap has no vnet header', async () => {
    const r = await runHelperLikeLibvirt(ns, ['helper', '--fd', '{FD}', '--br', 'br0'], env);
    try {
      assert.equal(r.code, 0, r.stderr);
      assert.equal(r.iff!.flags & IFF_VNET_HDR, 0);
    } finally {
      closeAll(r.fds);
    }
  });

  const bad: { name: string; args: string[]; env?: NodeJS.ProcessEnv; code: number; msg: RegExp; wrap?: string[] }[] = [
    { name: 'bridge refused by a deny rule', args: ['--br=denied0', '--fd={FD}'], code: ExitCode.ACCESS_DENIED, msg: /bridge 'denied0' is refused by rule 'deny denied0' at .*bridge\.conf:3/ },
    { name: 'bridge not in the ACL', args: ['--br=other0', '--fd={FD}'], code: ExitCode.ACCESS_DENIED, msg: /bridge 'other0' is not allowed by .*bridge\.conf .*default is deny.*add 'allow other0'/ },
    { name: 'ACL file missing', args: ['--br=br0', '--fd={FD}', '--acl=/nonexistent/acl.conf'], code: ExitCode.CONFIG, msg: /ACL file \/nonexistent\/acl.conf does not exist/ },
    { name: 'bridge missing', args: ['--br=gone0', '--fd={FD}'], code: ExitCode.NOT_FOUND, msg: /bridge 'gone0' does not exist/ },
    { name: 'not a bridge', args: ['--br=veth0', '--fd={FD}'], code: ExitCode.NOT_FOUND, msg: /'veth0' is not a bridge/ },
    { name: 'name too long', args: ['--br=abcdefghijklmnop', '--fd={FD}'], code: ExitCode.USAGE, msg: /bridge name 'abcdefghijklmnop' is 16 bytes/ },
    { name: 'name with a slash', args: ['--br=a/b', '--fd={FD}'], code: ExitCode.USAGE, msg: /bridge name 'a\/b' contains a character/ },
    { name: 'name with a space', args: ['--br=a b', '--fd={FD}'], code: ExitCode.USAGE, msg: /contains a character/ },
    { name: '--fd missing', args: ['--br=br0'], code: ExitCode.USAGE, msg: /missing --fd=FD/ },
    { name: '--fd not a number', args: ['--br=br0', '--fd=x3'], code: ExitCode.USAGE, msg: /--fd='x3' is not a file descriptor number/ },
    { name: '--fd not open', args: ['--br=br0', '--fd=77'], code: ExitCode.BAD_FD, msg: /--fd=77 is not an open file descriptor/ },
    { name: '--fd not a socket', args: ['--br=br0', '--fd=0'], code: ExitCode.BAD_FD, msg: /--fd=0 is not a socket/ },
    { name: 'unknown flag', args: ['--br=br0', '--fd={FD}', '--frobnicate'], code: ExitCode.USAGE, msg: /unknown flag '--frobnicate'/ },
    { name: 'no /dev/net/tun', args: ['--br=br0', '--fd={FD}'], env: { QEMU_NET_HELPER_TUN: '/nonexistent/tun' }, code: ExitCode.UNSUPPORTED, msg: /cannot open \/nonexistent\/tun: ENOENT.*modprobe tun/ },
    { name: 'no permission (not root, no CAP_NET_ADMIN)', args: ['--br=br0', '--fd={FD}'], wrap: ['setpriv', '--reuid=65534', '--regid=65534', '--clear-groups', '--inh-caps=-all', '--bounding-set=-all'], code: ExitCode.PERMISSION, msg: /needs CAP_NET_ADMIN/ },
  ];
  for (const b of bad) {
    it(`bad input: ${b.name} -> exit ${b.code}`, async () => {
      let aclCopy: string | undefined;
      if (b.wrap) {
        // An unprivileged user must be able to read the ACL to get past it.
        aclCopy = join(tmpdir(), `qnh-acl-${process.pid}.conf`);
        writeFileSync(aclCopy, 'allow br0\n', { mode: 0o644 });
      }
      const r = await runHelperLikeLibvirt(ns, b.args, { ...env, ...(aclCopy ? { QEMU_NET_HELPER_ACL: aclCopy } : {}), ...b.env }, b.wrap);
      if (aclCopy) rmSync(aclCopy, { force: true });
      closeAll(r.fds);
      assert.equal(r.code, b.code, `stderr: ${r.stderr}`);
      assert.match(r.stderr, b.msg);
      assert.equal(r.stderr.trim().split('\n').length, 1, 'exactly one line on stderr');
      assert.match(r.stderr, /^qemu-net-helper: /);
      assert.equal(r.stdout, '', 'nothing on stdout in helper mode');
      assert.equal(r.fds.length, 0, 'no fd is sent on failure');
      noLeftovers();
    });
  }
});
