// Helper exec-to-exit latency, measured the way QEMU experiences it: make a
// socketpair, exec the helper with one end, wait for it to exit, receive the
// byte and fd, and check the fd with TUNGETIFF. The same harness times
// `node -e 0` (the floor for any Node program) and Debian's
// qemu-bridge-helper (the C original) in the same run, interleaved.
import { execFileSync, spawn } from 'node:child_process';
import { existsSync, mkdirSync, mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { closeFd } from '../src/sys/libc.js';
import { tunGetIff } from '../src/sys/tun.js';
import { recvWithFds, socketPair } from '../src/sys/unix-fd.js';
import { BIN } from '../test/lib/paths.js';

const QBH = '/usr/lib/qemu/qemu-bridge-helper';

export interface LatencyRow { name: string; command: string; medianMs: number; p10Ms: number; p90Ms: number; runs: number }
export interface LatencyResult { rows: LatencyRow[]; ratioToNode: number; ratioToQbh: number | null }

async function once(cmd: string[], needFd: boolean, env: NodeJS.ProcessEnv): Promise<number> {
  const [ours, theirs] = socketPair();
  const t0 = process.hrtime.bigint();
  const child = spawn(cmd[0]!, cmd.slice(1), { stdio: ['ignore', 'ignore', 'inherit', theirs], env });
  closeFd(theirs);
  const code = await new Promise<number | null>((res) => child.once('exit', (c) => res(c)));
  let ok = code === 0;
  let fds: number[] = [];
  if (needFd) {
    const r = recvWithFds(ours, new Uint8Array(4), 0, 4, 0x40);
    fds = r.fds;
    ok = ok && r.n === 1 && r.fds.length === 1 && tunGetIff(r.fds[0]!) !== null;
  }
  const ms = Number(process.hrtime.bigint() - t0) / 1e6;
  // Outside the timed part: closing the last tap fd destroys the tap, which
  // the kernel does slowly (netdev unregistration) and QEMU never waits for.
  fds.forEach(closeFd);
  closeFd(ours);
  if (!ok) throw new Error(`${cmd.join(' ')} failed (exit ${code})`);
  return ms;
}

function stats(name: string, command: string, xs: number[]): LatencyRow {
  const s = [...xs].sort((a, b) => a - b);
  const q = (p: number): number => Number(s[Math.min(s.length - 1, Math.floor(p * s.length))]!.toFixed(1));
  return { name, command, medianMs: q(0.5), p10Ms: q(0.1), p90Ms: q(0.9), runs: xs.length };
}

export interface LatencyCase { name: string; cmd: string[]; fd: boolean }

/**
 * Times the cases interleaved (3 warm-up rounds), in order: node, ours, then
 * qemu-bridge-helper when present; ratios are ours (case 1) to the others.
 */
export async function measure(cases: LatencyCase[], rounds: number, env: NodeJS.ProcessEnv): Promise<LatencyResult> {
  const times = cases.map(() => [] as number[]);
  for (let r = -3; r < rounds; r++) {
    for (let i = 0; i < cases.length; i++) {
      const ms = await once(cases[i]!.cmd, cases[i]!.fd, env);
      if (r >= 0) times[i]!.push(ms);
    }
  }
  const rows = cases.map((c, i) => stats(c.name, c.cmd.join(' ').replace(process.execPath, 'node'), times[i]!));
  const ours = rows[1]!.medianMs;
  return { rows, ratioToNode: Number((ours / rows[0]!.medianMs).toFixed(2)), ratioToQbh: rows[2] ? Number((ours / rows[2].medianMs).toFixed(2)) : null };
}

async function inner(acl: string, rounds: number): Promise<LatencyResult> {
  const cases: LatencyCase[] = [
    { name: 'node -e 0', cmd: [process.execPath, '-e', '0'], fd: false },
    { name: 'qemu-net-helper', cmd: [process.execPath, BIN, '--use-vnet', '--fd=3', '--br=br0'], fd: true },
  ];
  if (existsSync(QBH)) cases.push({ name: 'qemu-bridge-helper', cmd: [QBH, '--use-vnet', '--fd=3', '--br=br0'], fd: true });
  return measure(cases, rounds, { ...process.env, QEMU_NET_HELPER_ACL: acl });
}

/** Sets up a namespace with br0 and a private /etc/qemu/bridge.conf, runs the measurement inside, cleans up. */
export async function benchHelperLatency(rounds = 40): Promise<LatencyResult> {
  const ns = `qnh-bench-${process.pid}`;
  const dir = mkdtempSync(join(tmpdir(), 'qnh-bench-'));
  try {
    execFileSync('ip', ['netns', 'add', ns]);
    execFileSync('ip', ['-n', ns, 'link', 'add', 'br0', 'type', 'bridge']);
    execFileSync('ip', ['-n', ns, 'link', 'set', 'br0', 'up']);
    // qemu-bridge-helper only reads /etc/qemu/bridge.conf: give it one through
    // an overlay on /etc in a private mount namespace, never touching the host's /etc.
    mkdirSync(join(dir, 'upper/qemu'), { recursive: true });
    mkdirSync(join(dir, 'work'));
    writeFileSync(join(dir, 'upper/qemu/bridge.conf'), 'allow br0\n');
    const acl = join(dir, 'upper/qemu/bridge.conf');
    const self = fileURLToPath(import.meta.url);
    const script = `mount -t overlay overlay -o lowerdir=/etc,upperdir=${dir}/upper,workdir=${dir}/work /etc && exec "${process.execPath}" "${self}" --inner "${acl}" ${rounds}`;
    const out = execFileSync('ip', ['netns', 'exec', ns, 'unshare', '--mount', '--propagation', 'private', 'sh', '-c', script], { encoding: 'utf8', stdio: ['ignore', 'pipe', 'inherit'] });
    return JSON.parse(out) as LatencyResult;
  } finally {
    try { execFileSync('ip', ['netns', 'del', ns], { stdio: 'ignore' }); } catch { /* not created */ }
    rmSync(dir, { recursive: true, force: true });
  }
}

// Only when run as the inner process itself (the other bench modules import this one).
if (process.argv[2] === '--inner' && process.argv[1] === fileURLToPath(import.meta.url)) {
  inner(process.argv[3]!, Number(process.argv[4])).then((r) => process.stdout.write(JSON.stringify(r)));
}
