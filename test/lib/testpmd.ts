// DPDK testpmd as a real vhost-user peer: virtio-user as front-end (traffic
// generator, sink, reflector) or net_vhost as the reference back-end. It runs
// with --stats-period (otherwise it waits for Enter on stdin) and stops on
// SIGINT, printing final per-port counters, which we parse.
import { spawn, type ChildProcess } from 'node:child_process';
import { existsSync, rmSync } from 'node:fs';

export const TESTPMD = '/usr/bin/dpdk-testpmd';
export const haveTestpmd = (): boolean => existsSync(TESTPMD);

export interface PortCounters { port: number; rxPackets: number; rxDropped: number; txPackets: number; txDropped: number }
export interface TestpmdResult { ports: PortCounters[]; output: string; rxPps: number[]; txPps: number[]; exitCode: number | null }

export interface TestpmdOptions {
  /** --vdev arguments, e.g. net_virtio_user0,path=/tmp/a.sock,queues=1 */
  vdevs: string[];
  forwardMode: 'txonly' | 'rxonly' | 'io' | 'mac' | 'macswap' | 'icmpecho' | 'csum';
  /** CPU pinning: "0@0,1@1" (main@cpu, fwd@cpu). */
  lcores?: string;
  /** Forwarding cores (each needs an lcore beyond the main one). */
  nbCores?: number;
  queues?: number;
  pktLen?: number;
  burst?: number;
  prefix: string;
  extra?: string[];
  /** Run inside this network namespace (for net_af_packet ports on its devices). */
  netns?: string;
}

export class Testpmd {
  readonly proc: ChildProcess;
  private out = '';
  readonly exited: Promise<number | null>;

  constructor(readonly opts: TestpmdOptions) {
    const q = String(opts.queues ?? 1);
    const args = [
      `--lcores=${opts.lcores ?? '0@0,1@1'}`, '--no-pci', `--file-prefix=${opts.prefix}`, '--no-huge', '-m', '512', '--log-level=user1,8',
      ...opts.vdevs.flatMap((v) => ['--vdev', v]),
      '--', `--forward-mode=${opts.forwardMode}`, `--nb-cores=${opts.nbCores ?? 1}`, `--rxq=${q}`, `--txq=${q}`,
      `--txpkts=${opts.pktLen ?? 64}`, `--burst=${opts.burst ?? 32}`, '--stats-period=1', '--total-num-mbufs=32768', '--no-lsc-interrupt',
      ...(opts.extra ?? []),
    ];
    this.proc = opts.netns
      ? spawn('ip', ['netns', 'exec', opts.netns, TESTPMD, ...args], { stdio: ['ignore', 'pipe', 'pipe'] })
      : spawn(TESTPMD, args, { stdio: ['ignore', 'pipe', 'pipe'] });
    const onData = (d: Buffer): void => { this.out += d.toString('latin1'); };
    this.proc.stdout!.on('data', onData);
    this.proc.stderr!.on('data', onData);
    this.exited = new Promise((res) => this.proc.once('exit', (c) => res(c)));
  }

  output(): string { return this.out; }

  /** Waits until testpmd printed something matching re (or exits / times out). */
  async waitFor(re: RegExp, timeoutMs = 60000): Promise<boolean> {
    const deadline = Date.now() + timeoutMs;
    while (Date.now() < deadline) {
      if (re.test(this.out)) return true;
      if (this.proc.exitCode !== null) return false;
      await new Promise((r) => setTimeout(r, 50));
    }
    return false;
  }

  /** SIGINT, then the final counters. */
  async stop(timeoutMs = 10000): Promise<TestpmdResult> {
    if (this.proc.exitCode === null) this.proc.kill('SIGINT');
    const t = setTimeout(() => this.proc.kill('SIGKILL'), timeoutMs);
    const code = await this.exited;
    clearTimeout(t);
    // DPDK leaves a run directory per --file-prefix (its config and sockets) behind.
    rmSync(`/var/run/dpdk/${this.opts.prefix}`, { recursive: true, force: true });
    return parseTestpmd(this.out, code);
  }
}

export function parseTestpmd(out: string, exitCode: number | null = 0): TestpmdResult {
  const ports: PortCounters[] = [];
  const re = /Forward statistics for port (\d+)\s+-+\s+RX-packets:\s*(\d+)\s+RX-dropped:\s*(\d+)\s+RX-total:\s*\d+\s+(?:Bad-[^\n]*\n\s*)*TX-packets:\s*(\d+)\s+TX-dropped:\s*(\d+)/g;
  for (const m of out.matchAll(re)) {
    const c = { port: Number(m[1]), rxPackets: Number(m[2]), rxDropped: Number(m[3]), txPackets: Number(m[4]), txDropped: Number(m[5]) };
    const i = ports.findIndex((p) => p.port === c.port);
    if (i >= 0) ports[i] = c; else ports.push(c);
  }
  const rxPps = [...out.matchAll(/Rx-pps:\s+(\d+)/g)].map((m) => Number(m[1]));
  const txPps = [...out.matchAll(/Tx-pps:\s+(\d+)/g)].map((m) => Number(m[1]));
  return { ports, output: out, rxPps, txPps, exitCode };
}

export interface NicStats { port: number; rxPackets: number; rxBytes: number; txPackets: number; txBytes: number }

/** The last `--stats-period` block of each port ("NIC statistics for port N": packets and bytes as the PMD counted them). */
export function lastNicStats(out: string): NicStats[] {
  const byPort = new Map<number, NicStats>();
  const re = /NIC statistics for port (\d+)\s+#+\s+RX-packets:\s*(\d+)\s+RX-missed:\s*\d+\s+RX-bytes:\s*(\d+)[\s\S]*?TX-packets:\s*(\d+)\s+TX-errors:\s*\d+\s+TX-bytes:\s*(\d+)/g;
  for (const m of out.matchAll(re)) {
    const port = Number(m[1]);
    byPort.set(port, { port, rxPackets: Number(m[2]), rxBytes: Number(m[3]), txPackets: Number(m[4]), txBytes: Number(m[5]) });
  }
  return [...byPort.values()];
}

/** testpmd's virtio-user sometimes fails its first handshake with EINTR (DPDK 22.11 does not retry). */
export function handshakeFailed(out: string): boolean {
  return /Failed to start device|Failed to get backend status|Failed to recv msg header/.test(out);
}
