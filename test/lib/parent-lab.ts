// A namespace with a macvtap parent `eth1` whose veth peer lives in a second
// namespace (so frames leaving eth1 have somewhere to go), and a scratch
// directory with an allow-all ACL and the env pointing the helper at it.
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { NetNs } from './netns.js';

export interface ParentLab {
  ns: NetNs;
  wire: NetNs;
  dir: string;
  env: NodeJS.ProcessEnv;
  destroy(): void;
}

export function createParentLab(dirPrefix: string): ParentLab {
  const ns = NetNs.create();
  const wire = NetNs.create('qnhw');
  ns.ip('link', 'add', 'eth1', 'type', 'veth', 'peer', 'name', 'weth1', 'netns', wire.name);
  ns.ip('link', 'set', 'eth1', 'up');
  wire.ip('link', 'set', 'weth1', 'up');
  const dir = mkdtempSync(join(tmpdir(), dirPrefix));
  writeFileSync(join(dir, 'acl.conf'), 'allow all\n');
  const env = { ...process.env, QEMU_NET_HELPER_ACL: join(dir, 'acl.conf'), QEMU_NET_HELPER_STATE_DIR: join(dir, 'state'), QEMU_NET_HELPER_CONFIG: join(dir, 'config') };
  return {
    ns, wire, dir, env,
    destroy() {
      ns.destroy();
      wire.destroy();
      rmSync(dir, { recursive: true, force: true });
    },
  };
}
