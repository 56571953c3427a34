// The unprivileged helper's exec-to-exit latency, measured as an unprivileged
// QEMU experiences it (uid 65534, socketpair, exec, wait, fd checked with
// TUNGETIFF): our helper as the broker's client, against `node -e 0` and a
// setuid-root copy of Debian's qemu-bridge-helper (what distributions ship),
// interleaved in one run. The whole measurement runs as the unprivileged user
// inside a namespace with br0 and our broker.
import { copyFileSync, chmodSync, chownSync, existsSync, mkdirSync, mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { execFileSync, spawn } from 'node:child_process';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { BIN } from '../test/lib/paths.js';
import { measure, type LatencyCase, type LatencyResult } from './helper-latency.js';

const QBH = '/usr/lib/qemu/qemu-bridge-helper';
const USER = 65534;

async function inner(socket: string, qbh: string, rounds: number): Promise<LatencyResult> {
  const env = { PATH: process.env.PATH, QEMU_NET_HELPER_BROKER: socket };
  const cases: LatencyCase[] = [
    { name: 'node -e 0 (uid 65534)', cmd: [process.execPath, '-e', '0'], fd: false },
    { name: 'qemu-net-helper via the broker (uid 65534)', cmd: [process.execPath, BIN, '--use-vnet', '--fd=3', '--br=br0'], fd: true },
  ];
  if (existsSync(qbh)) cases.push({ name: 'qemu-bridge-helper, setuid root (uid 65534)', cmd: [qbh, '--use-vnet', '--fd=3', '--br=br0'], fd: true });
  return measure(cases, rounds, env);
}

export async function benchBrokerLatency(rounds = 40): Promise<LatencyResult> {
  const ns = `qnh-bbench-${process.pid}`;
  const dir = mkdtempSync(join(tmpdir(), 'qnh-bbench-'));
  chmodSync(dir, 0o755);
  let broker: ReturnType<typeof spawn> | null = null;
  try {
    execFileSync('ip', ['netns', 'add', ns]);
    execFileSync('ip', ['-n', ns, 'link', 'add', 'br0', 'type', 'bridge']);
    execFileSync('ip', ['-n', ns, 'link', 'set', 'br0', 'up']);
    writeFileSync(join(dir, 'broker.conf'), 'allow br0\n');
    const socket = join(dir, 'broker.sock');
    broker = spawn('ip', ['netns', 'exec', ns, process.execPath, BIN, 'daemon', '--socket', socket, '--acl', join(dir, 'broker.conf')],
      { stdio: ['ignore', 'ignore', 'pipe'], env: { ...process.env, QEMU_NET_HELPER_STATE_DIR: join(dir, 'state') } });
    await new Promise<void>((res, rej) => {
      let err = '';
      broker!.stderr!.setEncoding('utf8').on('data', (d: string) => { err += d; if (err.includes('listening')) res(); });
      broker!.once('exit', () => rej(new Error(`broker exited: ${err}`)));
    });
    // A setuid-root copy of qemu-bridge-helper (Debian ships it without the bit) reading /etc/qemu/bridge.conf
    // from an overlay on /etc in a private mount namespace: the host's /etc is never touched.
    const qbh = join(dir, 'qemu-bridge-helper');
    if (existsSync(QBH)) {
      copyFileSync(QBH, qbh);
      chownSync(qbh, 0, 0);
      chmodSync(qbh, 0o4755);
    }
    mkdirSync(join(dir, 'upper/qemu'), { recursive: true });
    mkdirSync(join(dir, 'work'));
    writeFileSync(join(dir, 'upper/qemu/bridge.conf'), 'allow br0\n');
    const self = fileURLToPath(import.meta.url);
    const script = `mount -t overlay overlay -o lowerdir=/etc,upperdir=${dir}/upper,workdir=${dir}/work /etc && exec setpriv --reuid=${USER} --regid=${USER} --clear-groups "${process.execPath}" "${self}" --inner "${socket}" "${qbh}" ${rounds}`;
    const out = execFileSync('ip', ['netns', 'exec', ns, 'unshare', '--mount', '--propagation', 'private', 'sh', '-c', script], { encoding: 'utf8', stdio: ['ignore', 'pipe', 'inherit'] });
    return JSON.parse(out) as LatencyResult;
  } finally {
    broker?.kill('SIGTERM');
    try { execFileSync('ip', ['netns', 'del', ns], { stdio: 'ignore' }); } catch { /* not created */ }
    rmSync(dir, { recursive: true, force: true });
  }
}

// Only when run as the inner process itself (the other bench modules import this one).
if (process.argv[2] === '--inner' && process.argv[1] === fileURLToPath(import.meta.url)) {
  inner(process.argv[3]!, process.argv[4]!, Number(process.argv[5])).then((r) => process.stdout.write(JSON.stringify(r)));
}
