// The built-in demo: a throwaway network namespace with a bridge, real QEMU
// running our helper at start-up and through QMP hotplug, proof that QEMU holds
// taps on the bridge, and everything removed afterwards (also on failure).
import { execFileSync, spawn } from 'node:child_process';
import { existsSync, mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { dirname, join, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';
import { UnsupportedError, PermissionError } from '../errors.js';
import { tapsHeldBy } from './fdinfo.js';
import { qemuHelperPath } from './helper-path.js';
import { Qmp } from './qmp.js';

const QEMU = 'qemu-system-x86_64';
const BIN = resolve(dirname(fileURLToPath(import.meta.url)), '../../../bin/qemu-net-helper.cjs');

export interface DemoTap {
  name: string;
  how: string;
  master: string | undefined;
  mtu: number;
  vnetHdr: boolean;
  mac: string;
}

export interface DemoReport {
  namespace: string;
  bridge: string;
  bridgeMtu: number;
  qemuPid: number;
  taps: DemoTap[];
  tapsAfterQuit: string[];
  cleanedUp: boolean;
  ms: number;
}

function ip(...args: string[]): string {
  return execFileSync('ip', args, { encoding: 'utf8', stdio: ['ignore', 'pipe', 'pipe'] });
}

function describeTap(ns: string, name: string, how: string): DemoTap {
  const d = (JSON.parse(ip('-n', ns, '-json', '-d', 'link', 'show', 'dev', name)) as Record<string, any>[])[0]!;
  return { name, how, master: d.master, mtu: d.mtu, vnetHdr: Boolean(d.linkinfo?.info_data?.vnet_hdr), mac: d.address };
}

export async function runBridgeDemo(log: (line: string) => void = () => undefined): Promise<DemoReport> {
  const t0 = Date.now();
  if (process.geteuid?.() !== 0) throw new PermissionError('the demo creates a network namespace and needs root', 'run it with sudo');
  try { execFileSync(QEMU, ['--version'], { stdio: 'ignore' }); } catch {
    throw new UnsupportedError(`${QEMU} is not installed`, 'run scripts/setup.sh (installs qemu-system-x86) first');
  }
  const ns = `qnh-demo-${process.pid}`;
  const bridge = 'br0';
  const bridgeMtu = 1450;
  const dir = mkdtempSync(join(tmpdir(), 'qnh-demo-'));
  let qmp: Qmp | undefined;
  let child: ReturnType<typeof spawn> | undefined;
  try {
    ip('netns', 'add', ns);
    ip('-n', ns, 'link', 'add', bridge, 'type', 'bridge');
    ip('-n', ns, 'link', 'set', bridge, 'mtu', String(bridgeMtu), 'up');
    log(`namespace ${ns}: bridge ${bridge} (mtu ${bridgeMtu})`);
    const acl = join(dir, 'bridge.conf');
    writeFileSync(acl, `allow ${bridge}\n`);
    const qmpPath = join(dir, 'qmp.sock');
    const helper = qemuHelperPath(BIN, dir);
    const args = ['netns', 'exec', ns, QEMU, '-machine', 'none', '-nodefaults', '-display', 'none', '-S',
      '-qmp', `unix:${qmpPath},server=on,wait=off`, '-netdev', `tap,id=n0,helper=${helper}`];
    log(`starting: QEMU_NET_HELPER_ACL=${acl} qemu-system-x86_64 ... -netdev tap,id=n0,helper=${helper}`);
    child = spawn('ip', args, { stdio: ['ignore', 'ignore', 'pipe'], env: { ...process.env, QEMU_NET_HELPER_ACL: acl } });
    let stderr = '';
    child.stderr!.setEncoding('utf8').on('data', (d: string) => { stderr += d; });
    const exited = new Promise<void>((res) => child!.once('exit', () => res()));
    qmp = await Promise.race([Qmp.connect(qmpPath, undefined, undefined, () => child!.exitCode !== null || child!.signalCode !== null), exited.then(() => { throw new Error(`QEMU exited: ${stderr.trim()}`); })]);
    const pid = child.pid!;
    const taps: DemoTap[] = [];
    for (const name of tapsHeldBy(pid)) taps.push(describeTap(ns, name, 'at start-up (-netdev tap,helper=...)'));
    const r = await qmp.cmd('netdev_add', { type: 'tap', id: 'hot1', helper });
    if (!('return' in r)) throw new Error(`netdev_add failed: ${JSON.stringify(r)}`);
    for (const name of tapsHeldBy(pid)) if (!taps.some((t) => t.name === name)) taps.push(describeTap(ns, name, 'hotplugged (QMP netdev_add)'));
    for (const t of taps) log(`QEMU pid ${pid} holds ${t.name} (${t.how}): master ${t.master}, mtu ${t.mtu}, vnet_hdr ${t.vnetHdr ? 'on' : 'off'}, mac ${t.mac}`);
    await qmp.cmd('quit').catch(() => undefined);
    await exited;
    const left = (JSON.parse(ip('-n', ns, '-json', 'link', 'show')) as { ifname: string }[]).map((l) => l.ifname).filter((n) => taps.some((t) => t.name === n));
    log(left.length ? `taps still present after QEMU quit: ${left.join(' ')}` : 'QEMU quit: its taps are gone with it');
    return { namespace: ns, bridge, bridgeMtu, qemuPid: pid, taps, tapsAfterQuit: left, cleanedUp: true, ms: Date.now() - t0 };
  } finally {
    qmp?.close();
    if (child && child.exitCode === null) child.kill('SIGKILL');
    try { ip('netns', 'del', ns); } catch { /* never created */ }
    rmSync(dir, { recursive: true, force: true });
    if (existsSync(`/run/netns/${ns}`)) log(`warning: could not remove namespace ${ns}`);
    else log(`removed namespace ${ns}`);
  }
}
