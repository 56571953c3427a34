// A private OVS-DPDK (Debian's openvswitch-switch-dpdk) for benchmarks: its own
// database, run directory and network namespace, one datapath_type=netdev
// bridge whose dpdkvhostuser ports switch with the default NORMAL (learning)
// action, one PMD thread. Everything it takes (2 MiB hugepages, processes, the
// namespace where OVS makes its internal taps, files) is given back by stop(),
// and at process exit if the caller never got there.
import { execFileSync, type ChildProcess } from 'node:child_process';
import { existsSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { NetNs } from '../test/lib/netns.js';

const OVS_VSWITCHD_DPDK = '/usr/lib/openvswitch-switch-dpdk/ovs-vswitchd-dpdk';
const SCHEMA = '/usr/share/openvswitch/vswitch.ovsschema';
const HUGEPAGES = '/proc/sys/vm/nr_hugepages';
/** OVS adds --in-memory to DPDK's arguments, which refuses --no-huge: it needs real hugepages. */
const PAGES = 600;
const OVS_INSTALL_HINT = 'apt-get install openvswitch-switch-dpdk (then stop/disable the openvswitch-switch service if your init started it)';

const sleep = (ms: number): Promise<void> => new Promise((r) => setTimeout(r, ms));

/** Why OVS-DPDK cannot be started here, or null. */
export function ovsMissing(): string | null {
  for (const f of [OVS_VSWITCHD_DPDK, SCHEMA, '/usr/sbin/ovsdb-server', '/usr/bin/ovsdb-tool', '/usr/bin/ovs-vsctl', '/usr/bin/ovs-appctl']) {
    if (!existsSync(f)) return `${f} is missing: ${OVS_INSTALL_HINT}`;
  }
  if (process.getuid?.() !== 0) return 'OVS-DPDK needs root (hugepages, namespaces)';
  return null;
}

export interface OvsInterfaceStats { name: string; rxPackets: number; txPackets: number; txDropped: number; mtuDrops: number }

export class OvsDpdk {
  readonly sockets: string[] = [];
  private vswitchd: ChildProcess | null = null;
  private ovsdb: ChildProcess | null = null;
  private stopped = false;
  /** DPDK --file-prefix of this OVS (its run directory under /var/run/dpdk), not the system OVS's default. */
  private readonly prefix = `qnh-ovs-${process.pid}-${Date.now().toString(36)}`;
  private readonly onExit = (): void => this.cleanupSync();

  private constructor(readonly dir: string, readonly ns: NetNs, private readonly pagesBefore: number, private readonly ownNs: boolean) {
    process.on('exit', this.onExit);
  }

  /**
   * Starts ovsdb-server and ovs-vswitchd-dpdk (every thread on `cpu`, the PMD too)
   * with a bridge of `ports` vhost-user server ports; throws with OVS's own words on failure.
   * In `ns` when given (the caller's devices are there, and the caller removes it), else in a namespace of its own.
   */
  static async start(ports: number, cpu: number, ns?: NetNs): Promise<OvsDpdk> {
    const why = ovsMissing();
    if (why) throw new Error(why);
    const before = Number(readFileSync(HUGEPAGES, 'utf8'));
    writeFileSync(HUGEPAGES, String(before + PAGES));
    // The namespace keeps OVS's internal taps (ovs-netdev, the bridge port) off the host.
    const ovs = new OvsDpdk(mkdtempSync(join(tmpdir(), 'qnh-ovs-')), ns ?? NetNs.create('qnhovs'), before, !ns);
    try {
      await ovs.boot(ports, cpu);
      return ovs;
    } catch (e) {
      await ovs.stop();
      throw e;
    }
  }

  private get env(): NodeJS.ProcessEnv {
    // OVS_RUNDIR moves the control sockets and vhost-user sockets out of /var/run/openvswitch.
    const d = this.dir;
    return { ...process.env, OVS_RUNDIR: d, OVS_DBDIR: d, OVS_LOGDIR: d, OVS_SYSCONFDIR: d };
  }

  vsctl(...args: string[]): string {
    return execFileSync('ovs-vsctl', [`--db=unix:${join(this.dir, 'db.sock')}`, '--timeout=30', ...args],
      { encoding: 'utf8', env: this.env, timeout: 40000, stdio: ['ignore', 'pipe', 'pipe'] });
  }

  appctl(...args: string[]): string {
    return execFileSync('ovs-appctl', ['-t', join(this.dir, 'vswitchd.ctl'), ...args],
      { encoding: 'utf8', env: this.env, timeout: 20000, stdio: ['ignore', 'pipe', 'pipe'] });
  }

  log(): string {
    try { return readFileSync(join(this.dir, 'vswitchd.log'), 'utf8'); } catch { return ''; }
  }

  private async boot(ports: number, cpu: number): Promise<void> {
    const got = Number(readFileSync(HUGEPAGES, 'utf8'));
    if (got < this.pagesBefore + PAGES) throw new Error(`only ${got - this.pagesBefore} of ${PAGES} 2 MiB hugepages could be reserved (memory fragmented or limited); OVS-DPDK needs them`);
    const d = this.dir;
    execFileSync('ovsdb-tool', ['create', join(d, 'conf.db'), SCHEMA], { env: this.env, stdio: 'ignore' });
    this.ovsdb = this.ns.spawn('ovsdb-server', [join(d, 'conf.db'), `--remote=punix:${join(d, 'db.sock')}`,
      `--unixctl=${join(d, 'ovsdb.ctl')}`, `--log-file=${join(d, 'ovsdb.log')}`], { env: this.env, stdio: 'ignore' });
    await this.until(() => existsSync(join(d, 'db.sock')), 10000, 'ovsdb-server did not create its socket');
    this.vsctl('--no-wait', 'init');
    this.vsctl('--no-wait', 'set', 'Open_vSwitch', '.', 'other_config:dpdk-init=true', `other_config:dpdk-extra=--no-pci --file-prefix=${this.prefix}`,
      'other_config:dpdk-socket-mem=512', `other_config:pmd-cpu-mask=0x${(1 << cpu).toString(16)}`);
    // taskset first: every thread OVS starts (main, handlers, revalidators, PMD) stays on that core.
    this.vswitchd = this.ns.spawn('taskset', ['-c', String(cpu), OVS_VSWITCHD_DPDK, `unix:${join(d, 'db.sock')}`,
      `--unixctl=${join(d, 'vswitchd.ctl')}`, `--log-file=${join(d, 'vswitchd.log')}`], { env: this.env, stdio: 'ignore' });
    await this.until(() => existsSync(join(d, 'vswitchd.ctl')), 30000, 'ovs-vswitchd-dpdk did not start');
    // DPDK initialises after the control socket exists; EAL failures end the daemon (caught by until()).
    await this.until(() => /true/.test(this.vsctl('get', 'Open_vSwitch', '.', 'dpdk_initialized')), 60000, 'DPDK did not initialise in OVS');
    this.vsctl('add-br', 'br0', '--', 'set', 'bridge', 'br0', 'datapath_type=netdev');
    for (let i = 0; i < ports; i++) {
      this.vsctl('add-port', 'br0', `vu${i}`, '--', 'set', 'Interface', `vu${i}`, 'type=dpdkvhostuser');
      this.sockets.push(join(d, `vu${i}`));
    }
    await this.until(() => this.sockets.every((s) => existsSync(s)), 20000, 'OVS did not create its vhost-user sockets');
  }

  private async until(ok: () => boolean, ms: number, what: string): Promise<void> {
    const deadline = Date.now() + ms;
    while (!ok()) {
      if (this.vswitchd?.exitCode != null || this.ovsdb?.exitCode != null) throw new Error(`${what} (exited):\n${this.log().slice(-3000)}`);
      if (Date.now() > deadline) throw new Error(`${what} within ${ms} ms:\n${this.log().slice(-3000)}`);
      await sleep(50);
    }
  }

  get pid(): number | undefined { return this.vswitchd?.pid; }

  /** MACs in the bridge's learning table. */
  learnedMacs(): string[] {
    return [...this.appctl('fdb/show', 'br0').matchAll(/([0-9a-f]{2}(?::[0-9a-f]{2}){5})/g)].map((m) => m[1]!);
  }

  interfaceStats(): OvsInterfaceStats[] {
    return this.sockets.map((_, i) => {
      const name = `vu${i}`;
      const raw = this.vsctl('get', 'Interface', name, 'statistics');
      const n = (k: string): number => Number(new RegExp(`\\b${k}=(\\d+)`).exec(raw)?.[1] ?? 0);
      return { name, rxPackets: n('rx_packets'), txPackets: n('tx_packets'), txDropped: n('tx_dropped'), mtuDrops: n('ovs_tx_mtu_exceeded_drops') };
    });
  }

  /** Ends both daemons, removes its own namespace (and OVS's taps in it), the files, and gives the hugepages back. */
  async stop(): Promise<void> {
    if (this.stopped) return;
    for (const p of [this.vswitchd, this.ovsdb]) {
      if (!p || p.exitCode !== null || p.signalCode !== null) continue;
      const gone = new Promise<void>((r) => p.once('exit', () => r()));
      p.kill('SIGTERM');
      const t = setTimeout(() => p.kill('SIGKILL'), 10000);
      await gone;
      clearTimeout(t);
    }
    this.cleanupSync();
  }

  private cleanupSync(): void {
    if (this.stopped) return;
    this.stopped = true;
    for (const p of [this.vswitchd, this.ovsdb]) {
      try { if (p && p.exitCode === null) p.kill('SIGKILL'); } catch { /* gone */ }
    }
    if (this.ownNs) this.ns.destroy();
    rmSync(this.dir, { recursive: true, force: true });
    // Its DPDK's run directory (one per --file-prefix), which DPDK leaves behind.
    rmSync(`/var/run/dpdk/${this.prefix}`, { recursive: true, force: true });
    try { writeFileSync(HUGEPAGES, String(this.pagesBefore)); } catch { /* reported by the caller's check */ }
    process.off('exit', this.onExit);
  }
}
