// The kernel lab: Debian's kernel (the test guests' vmlinux) under QEMU TCG
// with this machine's root file system shared read-only over virtio-9p, so
// Node, the project and its tests run inside with the modules this host's
// kernel lacks (vhost_net, 8021q, dummy, ...). The lab's tests print one
// `QNH-LAB {json}` line each (test/lab/reporter.ts); runLab streams them.
import { spawn } from 'node:child_process';
import { createHash, randomBytes } from 'node:crypto';
import { existsSync, mkdirSync, readFileSync, renameSync, statSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { gzipSync } from 'node:zlib';
import { busyboxPath, ensureGuestImage, moduleBytes, moduleLoadOrder, newcCpio, qemuBinary, type CpioEntry } from './guest-image.js';
import { ROOT } from './paths.js';

const CACHE = join(ROOT, '.cache', 'lab');
// 9p over virtio-pci; the rest of the modules come from the shared root.
const BOOT_MODULES = ['virtio_pci', '9pnet_virtio', '9p'];
const LAB_FORMAT = 1;

export interface LabResult {
  name: string;
  nesting: number;
  file?: string;
  suite: boolean;
  ok: boolean;
  ms: number;
  skip?: string;
  error?: string;
}

async function labImage(): Promise<{ kernel: string; initrd: string }> {
  const guest = await ensureGuestImage();
  const kver = guest.kernelVersion;
  const init = readFileSync(join(ROOT, 'test', 'lab', 'init'));
  const mods = moduleLoadOrder(kver, BOOT_MODULES);
  const bb = busyboxPath();
  const key = createHash('sha256').update(JSON.stringify({ LAB_FORMAT, kver, mods, bb: statSync(bb).size })).update(init).digest('hex').slice(0, 16);
  const initrd = join(CACHE, `lab-${kver}-${key}.cpio.gz`);
  if (!existsSync(initrd)) {
    mkdirSync(CACHE, { recursive: true });
    const dir = (name: string): CpioEntry => ({ name, mode: 0o040755 });
    const file = (name: string, data: Buffer, perm = 0o644): CpioEntry => ({ name, mode: 0o100000 | perm, data });
    const cpio = newcCpio([
      ...['bin', 'sbin', 'usr', 'usr/bin', 'usr/sbin', 'etc', 'lib', 'lib/modules', 'proc', 'sys', 'dev', 'newroot'].map(dir),
      { name: 'dev/console', mode: 0o020600, rdev: [5, 1] },
      file('bin/busybox', readFileSync(bb), 0o755),
      { name: 'bin/sh', mode: 0o120777, data: Buffer.from('busybox') },
      file('init', init, 0o755),
      file('etc/qnh-modules', Buffer.from(mods.map((m) => m.name).join('\n') + '\n')),
      ...mods.map((m) => file(`lib/modules/${m.name}.ko`, moduleBytes(kver, m.path))),
    ]);
    const tmp = `${initrd}.${process.pid}.${randomBytes(3).toString('hex')}`;
    writeFileSync(tmp, gzipSync(cpio));
    renameSync(tmp, initrd);
  }
  return { kernel: guest.kernel, initrd };
}

export interface LabRun {
  /** Resolves when QEMU is gone, with the inner node --test exit status (null if never printed). */
  done: Promise<{ exitStatus: number | null; results: LabResult[]; console: string; stderr: string; timedOut: boolean }>;
  kill(): void;
}

/**
 * Boots the lab and runs the named files of dist/test/lab inside; onResult
 * sees each finished test as its line arrives.
 */
export async function runLab(files: string[], onResult: (r: LabResult) => void, opts: { timeoutMs?: number; memoryMb?: number; smp?: number; onLine?: (l: string) => void } = {}): Promise<LabRun> {
  const img = await labImage();
  const qemu = qemuBinary();
  if (!qemu) throw new Error('qemu-system-x86_64 not found');
  for (const f of files) if (!/^[\w.-]+\.js$/.test(f)) throw new Error(`lab file name ${f} cannot go on the kernel command line`);
  const args = [
    '-machine', 'pc,accel=tcg', '-cpu', 'max', '-m', String(opts.memoryMb ?? 1536), '-smp', String(opts.smp ?? 2),
    '-nodefaults', '-no-user-config', '-display', 'none', '-no-reboot', '-serial', 'stdio',
    '-kernel', img.kernel, '-initrd', img.initrd,
    // The checkout's path in hex: the kernel command line splits at spaces.
    '-append', ['console=ttyS0', 'quiet', 'loglevel=1', 'panic=-1', `qnh.roothex=${Buffer.from(ROOT).toString('hex')}`, `qnh.files=${files.join(',')}`].join(' '),
    '-fsdev', 'local,id=hostroot,path=/,security_model=none,readonly=on',
    '-device', 'virtio-9p-pci,fsdev=hostroot,mount_tag=hostroot',
  ];
  const proc = spawn(qemu, args, { stdio: ['ignore', 'pipe', 'pipe'] });
  const results: LabResult[] = [];
  let out = '', partial = '', err = '', exitStatus: number | null = null, timedOut = false;
  const hard = setTimeout(() => { timedOut = true; proc.kill('SIGKILL'); }, opts.timeoutMs ?? 600_000);
  const line = (l: string): void => {
    opts.onLine?.(l);
    const m = /QNH-LAB (\{.*\})\s*$/.exec(l);
    if (m) {
      try {
        const r = JSON.parse(m[1]!) as LabResult;
        results.push(r);
        onResult(r);
      } catch { /* a line the console mangled: the count check catches it */ }
    }
    const e = /QNH-LAB-EXIT (\d+)/.exec(l);
    if (e) exitStatus = Number(e[1]);
  };
  proc.stdout.setEncoding('utf8').on('data', (d: string) => {
    out += d;
    const lines = (partial + d).replace(/\r/g, '').split('\n');
    partial = lines.pop()!;
    for (const l of lines) line(l);
  });
  proc.stderr.setEncoding('utf8').on('data', (d: string) => { err += d; });
  const done = new Promise<Awaited<LabRun['done']>>((res) => {
    proc.once('close', () => {
      clearTimeout(hard);
      if (partial) line(partial);
      res({ exitStatus, results, console: out, stderr: err, timedOut });
    });
  });
  process.once('exit', () => { try { proc.kill('SIGKILL'); } catch { /* gone */ } });
  return { done, kill: () => { try { proc.kill('SIGKILL'); } catch { /* gone */ } } };
}
