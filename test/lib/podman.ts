// Debian's podman with the CNI network backend, every piece of its state in
// one temp directory (storage, run root, tmp dir, containers.conf, network
// configs, CNI plugin dir), run inside a throwaway "host" namespace so the
// networks' bridges and uplinks are test objects. The image is a busybox
// rootfs imported from a tarball: no registry is needed.
import { spawnSync } from 'node:child_process';
import { chmodSync, existsSync, mkdirSync, mkdtempSync, rmSync, symlinkSync, writeFileSync, copyFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import type { NetNs } from './netns.js';
import { BIN } from './paths.js';
import { DEBIAN_CNI_DIR } from './cni.js';

export const IMAGE = 'localhost/qnh-busybox:test';
const BUSYBOX = '/bin/busybox';

export const havePodman = (): boolean => ['/usr/bin/podman', '/usr/sbin/runc', BUSYBOX, `${DEBIAN_CNI_DIR}/host-local`].every((p) => existsSync(p));

export interface Out { status: number | null; stdout: string; stderr: string }

export class Podman {
  readonly dir: string;
  readonly netDir: string;
  readonly pluginDir: string;
  readonly stateDir: string;
  readonly ipamDir: string;
  private constructor(readonly host: NetNs, dir: string) {
    this.dir = dir;
    this.netDir = join(dir, 'net.d');
    this.pluginDir = join(dir, 'cni-bin');
    this.stateDir = join(dir, 'qnh-state');
    this.ipamDir = join(dir, 'ipam');
  }

  static create(host: NetNs): Podman {
    const p = new Podman(host, mkdtempSync(join(tmpdir(), 'qnh-podman-')));
    for (const d of [p.netDir, p.pluginDir]) mkdirSync(d, { recursive: true });
    // Our executable under its CNI type name, next to the reference plugins we delegate to.
    symlinkSync(BIN, join(p.pluginDir, 'qemu-net-helper'));
    // The state directory comes from root's paths file beside the plugin, never from the network configuration.
    writeFileSync(join(p.pluginDir, 'qemu-net-helper.json'), JSON.stringify({ stateDir: p.stateDir }), { mode: 0o644 });
    for (const x of ['host-local', 'loopback', 'bridge', 'macvlan', 'tap']) {
      if (existsSync(join(DEBIAN_CNI_DIR, x))) symlinkSync(join(DEBIAN_CNI_DIR, x), join(p.pluginDir, x));
    }
    // runc, not crun: crun refuses this machine's hybrid cgroup layout. The
    // ulimits podman sets by default exceed what this sandbox may raise.
    writeFileSync(join(p.dir, 'containers.conf'), [
      '[network]', 'network_backend = "cni"', `cni_plugin_dirs = ["${p.pluginDir}"]`, `network_config_dir = "${p.netDir}"`,
      '[containers]', 'default_ulimits = ["nofile=1024:1024", "nproc=4096:4096"]',
      '[engine]', 'cgroup_manager = "cgroupfs"', 'events_logger = "file"', 'runtime = "runc"', '',
    ].join('\n'));
    p.importImage();
    return p;
  }

  private importImage(): void {
    const root = join(this.dir, 'rootfs');
    mkdirSync(join(root, 'bin'), { recursive: true });
    copyFileSync(BUSYBOX, join(root, 'bin/busybox'));
    chmodSync(join(root, 'bin/busybox'), 0o755);
    const applets = spawnSync(BUSYBOX, ['--list'], { encoding: 'utf8' }).stdout.split('\n').filter(Boolean);
    // Relative links: `busybox --install` would point them at the host's path.
    for (const a of applets) if (a !== 'busybox') symlinkSync('busybox', join(root, 'bin', a));
    const tar = join(this.dir, 'rootfs.tar');
    const t = spawnSync('tar', ['-C', root, '-cf', tar, '.'], { encoding: 'utf8' });
    if (t.status !== 0) throw new Error(`tar: ${t.stderr}`);
    const r = this.run(['import', tar, IMAGE]);
    if (r.status !== 0) throw new Error(`podman import: ${r.stderr}`);
  }

  /** Writes a conflist with one plugin; `stateDir`/`dataDir` point at this run's directories. */
  network(name: string, plugin: Record<string, unknown>, cniVersion = '1.0.0'): void {
    writeFileSync(join(this.netDir, `${name}.conflist`), JSON.stringify({ cniVersion, name, plugins: [plugin] }, null, 2));
  }

  /** podman inside the host namespace (nsenter keeps the mounts: runc needs the real cgroupfs). */
  run(args: string[], timeoutMs = 120_000): Out {
    const global = ['--root', join(this.dir, 'root'), '--runroot', join(this.dir, 'runroot'), '--tmpdir', join(this.dir, 'tmp'), '--storage-driver', 'vfs'];
    const r = spawnSync('nsenter', [`--net=/run/netns/${this.host.name}`, 'podman', ...global, ...args], {
      env: { ...process.env, CONTAINERS_CONF: join(this.dir, 'containers.conf') }, encoding: 'utf8', timeout: timeoutMs,
    });
    return { status: r.status, stdout: r.stdout ?? '', stderr: r.stderr ?? '' };
  }

  /** Removes every container and the whole state directory. */
  destroy(): void {
    this.run(['rm', '-a', '-f', '-t', '0']);
    spawnSync('umount', ['-R', join(this.dir, 'runroot')], { stdio: 'ignore' });
    spawnSync('umount', ['-R', join(this.dir, 'root')], { stdio: 'ignore' });
    rmSync(this.dir, { recursive: true, force: true });
  }
}
