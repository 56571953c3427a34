// One dnsmasq daemon per NAT network, DHCP only (--port=0: no DNS), with every
// file in that network's state directory. dnsmasq daemonizes itself and its
// first process exits only after the daemon finished starting up (it reports
// start-up errors through a pipe and exits non-zero), so a synchronous exec
// is both a start and a readiness check. Stopping is by the pid file, and only
// after checking that the pid still is *our* dnsmasq: a stale pid file must
// never make us kill an unrelated process that reused the number.
import { execFileSync } from 'node:child_process';
import { closeSync, constants as fsc, existsSync, mkdirSync, openSync, readdirSync, readFileSync, rmSync } from 'node:fs';
import { join } from 'node:path';
import { NotFoundError, SetupError } from '../errors.js';
import { SAFE_PATH } from '../host/context.js';
import { sleepMs } from '../sys/flock.js';
import { writeFileAtomic } from '../state/atomic-file.js';

export interface DnsmasqPaths {
  pidFile: string;
  leaseFile: string;
  logFile: string;
  /** One file per fixed guest address (see writeDhcpHost). */
  hostsDir: string;
}

export function dnsmasqPaths(dir: string): DnsmasqPaths {
  return {
    pidFile: join(dir, 'dnsmasq.pid'),
    leaseFile: join(dir, 'dnsmasq.leases'),
    logFile: join(dir, 'dnsmasq.log'),
    hostsDir: join(dir, 'hosts.d'),
  };
}

export interface DnsmasqConfig {
  /** State directory of this network: pid, lease, log files and hosts.d live here. */
  dir: string;
  iface: string;
  rangeStart: string;
  rangeEnd: string;
  netmask: string;
  /** dnsmasq lease time syntax: 1h, 45m, infinite. */
  leaseTime: string;
  /** DNS servers to announce (option 6); none by default since this dnsmasq serves no DNS. */
  dnsServers?: string[];
  /**
   * dnsmasq pings an address before offering it (~3 s for a new client) so a
   * guest with a hand-configured address in the range is not doubled.
   * Off trades that safety for fast leases.
   */
  ping: boolean;
}

/** The command line; `hosts` are fixed addresses (MAC -> IPv4). */
export function dnsmasqArgs(cfg: DnsmasqConfig, hosts: ReadonlyMap<string, string> = new Map()): string[] {
  const p = dnsmasqPaths(cfg.dir);
  const args = [
    // Nothing from /etc/dnsmasq.conf or /etc/dnsmasq.d: this instance is ours alone.
    '--conf-file=/dev/null',
    `--pid-file=${p.pidFile}`,
    `--dhcp-leasefile=${p.leaseFile}`,
    `--log-facility=${p.logFile}`,
    `--interface=${cfg.iface}`,
    '--bind-interfaces',
    '--except-interface=lo',
    `--dhcp-range=${cfg.rangeStart},${cfg.rangeEnd},${cfg.netmask},${cfg.leaseTime}`,
    '--dhcp-authoritative',
    '--no-resolv',
    '--no-hosts',
    '--port=0',
  ];
  if (!cfg.ping) args.push('--no-ping');
  for (const [mac, ip] of hosts) args.push(`--dhcp-host=${mac},${ip}`);
  if (cfg.dnsServers?.length) args.push(`--dhcp-option=option:dns-server,${cfg.dnsServers.join(',')}`);
  return args;
}

/** Starts the daemon and returns its pid; throws SetupError with dnsmasq's own message when it refuses. */
export function startDnsmasq(cfg: DnsmasqConfig, bin: string | null): number {
  if (!bin) throw new NotFoundError("the 'dnsmasq' command is not installed", "install dnsmasq (Debian: 'apt-get install dnsmasq-base')");
  const p = dnsmasqPaths(cfg.dir);
  mkdirSync(p.hostsDir, { recursive: true });
  // stderr goes to a file, not a pipe: the daemon inherits it and a pipe
  // would stay open for as long as the daemon lives (and execFileSync waits
  // for the pipe). The file holds dnsmasq's start-up error when it fails.
  const errFile = join(cfg.dir, 'dnsmasq.start.err');
  const errFd = openSync(errFile, fsc.O_WRONLY | fsc.O_CREAT | fsc.O_TRUNC | fsc.O_NOFOLLOW, 0o600);
  try {
    execFileSync(bin, dnsmasqArgs(cfg, dhcpHosts(cfg.dir)), { stdio: ['ignore', 'ignore', errFd], env: { PATH: SAFE_PATH, LC_ALL: 'C' } });
  } catch (e) {
    const err = e as { code?: string; status?: number | null; message: string };
    let detail = '';
    try { detail = readFileSync(errFile, 'utf8').trim().split('\n')[0] ?? ''; } catch { /* none */ }
    if (err.code === 'ENOENT') throw new NotFoundError(`'${bin}' cannot be run (ENOENT)`, 'install dnsmasq-base');
    throw new SetupError(`starting dnsmasq on ${cfg.iface} failed: ${detail || `exit status ${err.status ?? err.message}`}`);
  } finally {
    closeSync(errFd);
  }
  rmSync(errFile, { force: true });
  const pid = dnsmasqPid(p.pidFile);
  if (pid === null) throw new SetupError(`dnsmasq on ${cfg.iface} exited right after starting; see ${p.logFile}`);
  return pid;
}

function procState(pid: number): string | null {
  try {
    // "pid (comm) S ...": the state follows the last ')' (comm may contain spaces or parens).
    const stat = readFileSync(`/proc/${pid}/stat`, 'latin1');
    return stat.slice(stat.lastIndexOf(')') + 2, stat.lastIndexOf(')') + 3);
  } catch {
    return null;
  }
}

/**
 * The pid of the dnsmasq that owns `pidFile`, when it is alive: the process
 * must be named dnsmasq and have been started with exactly this pid file.
 */
export function dnsmasqPid(pidFile: string): number | null {
  let pid: number;
  try {
    pid = Number(readFileSync(pidFile, 'latin1').trim());
  } catch {
    return null;
  }
  if (!Number.isInteger(pid) || pid <= 1) return null;
  const state = procState(pid);
  if (state === null || state === 'Z' || state === 'X') return null;
  try {
    const comm = readFileSync(`/proc/${pid}/comm`, 'latin1').trim();
    const argv = readFileSync(`/proc/${pid}/cmdline`, 'latin1').split('\0');
    if (comm !== 'dnsmasq' || !argv.includes(`--pid-file=${pidFile}`)) return null;
  } catch {
    return null;
  }
  return pid;
}


/**
 * Stops our dnsmasq (SIGTERM, then SIGKILL after `timeoutMs`) and removes the
 * pid file. Not running, or the pid now belonging to someone else, is success.
 */
export function stopDnsmasq(pidFile: string, timeoutMs = 2000): void {
  const pid = dnsmasqPid(pidFile);
  if (pid !== null) {
    try { process.kill(pid, 'SIGTERM'); } catch { /* gone already */ }
    const deadline = Date.now() + timeoutMs;
    while (Date.now() < deadline && isAlive(pid)) sleepMs(5);
    if (isAlive(pid)) {
      try { process.kill(pid, 'SIGKILL'); } catch { /* gone */ }
      const hard = Date.now() + 1000;
      while (Date.now() < hard && isAlive(pid)) sleepMs(5);
    }
  }
  rmSync(pidFile, { force: true });
}

function isAlive(pid: number): boolean {
  const s = procState(pid);
  return s !== null && s !== 'Z' && s !== 'X';
}

/**
 * Fixed address for a guest MAC: one file in hosts.d, read by *us*; dnsmasq
 * gets the list as --dhcp-host options. dnsmasq reads every file it is given
 * (dhcp-hostsfile, dhcp-hostsdir) only after dropping its privileges (to
 * nobody), which fails when the state directory is not world-traversable
 * ("bad dynamic directory ...: Permission denied"). So callers restart the
 * daemon after changing reservations (restartDnsmasq): leases live in the
 * lease file, so nobody loses an address, and a client in the middle of an
 * exchange retries.
 */
export function writeDhcpHost(dir: string, mac: string, ip: string): string {
  const p = dnsmasqPaths(dir);
  mkdirSync(p.hostsDir, { recursive: true });
  const base = mac.replace(/:/g, '');
  const file = join(p.hostsDir, base);
  // Written whole then renamed (its temporary name starts with a dot, which
  // dhcpHosts() and dnsmasq's --dhcp-hostsdir skip); 0644 for dnsmasq as nobody.
  writeFileAtomic(file, `${mac},${ip}\n`, 0o644);
  return file;
}

export function removeDhcpHost(dir: string, mac: string): void {
  rmSync(join(dnsmasqPaths(dir).hostsDir, mac.replace(/:/g, '')), { force: true });
}

/** Fixed addresses as dnsmasq will see them: MAC -> IPv4. */
export function dhcpHosts(dir: string): Map<string, string> {
  const out = new Map<string, string>();
  const d = dnsmasqPaths(dir).hostsDir;
  if (!existsSync(d)) return out;
  for (const name of readdirSync(d)) {
    if (name.startsWith('.')) continue;
    const [mac, ip] = readFileSync(join(d, name), 'utf8').trim().split(',');
    if (mac && ip) out.set(mac, ip);
  }
  return out;
}

/** Stop and start again with the same configuration and the current fixed addresses. */
export function restartDnsmasq(cfg: DnsmasqConfig, bin: string | null): number {
  stopDnsmasq(dnsmasqPaths(cfg.dir).pidFile);
  return startDnsmasq(cfg, bin);
}

export function dnsmasqLeases(dir: string): { expires: number; mac: string; ip: string; hostname: string }[] {
  const file = dnsmasqPaths(dir).leaseFile;
  if (!existsSync(file)) return [];
  return readFileSync(file, 'utf8').split('\n').filter(Boolean).map((line) => {
    const [expires, mac, ip, hostname] = line.split(' ');
    return { expires: Number(expires), mac: mac ?? '', ip: ip ?? '', hostname: hostname ?? '*' };
  });
}

