// Runs kernel implementations *inside* a test network namespace the way the
// helper runs in production: a separate process started by `ip netns exec`
// (which also remounts /sys for that namespace, as the macvtap kernel needs).
// setup's fds come back over SCM_RIGHTS, so the test holds them as QEMU
// would; release runs in yet another process from the owned objects' JSON
// alone — exactly the contract of KernelBackend.release.
//
// This file has three roles:
//   - with QNH_KERNEL_DRIVER=1 it is the driver process (one op from argv);
//   - imported by the kernel-*.test.ts files it gives them setupInNs() & co.
//     and a few frame builders;
//   - run as a test file it checks that probes work inside a namespace.
import assert from 'node:assert/strict';
import { spawn, spawnSync } from 'node:child_process';
import * as fsSync from 'node:fs';
import { fileURLToPath, pathToFileURL } from 'node:url';
import { describe, it } from 'node:test';
import type { EndpointRequest, HostContext, KernelBackend, KernelEndpoint, OwnedObject } from '../../src/backends/types.js';
import { describeError, HelperError } from '../../src/errors.js';
import { c, closeFd } from '../../src/sys/libc.js';
import { recvWithFds, sendWithFds, socketPair } from '../../src/sys/unix-fd.js';
import type { NetNs } from '../lib/netns.js';

const DRIVER = fileURLToPath(import.meta.url);

export type BackendName = 'macvtap' | 'veth' | 'route' | 'nat';

/** EndpointRequest as JSON: the MAC as text. */
export type JsonRequest = Omit<EndpointRequest, 'mac'> & { mac?: string };

export interface HostOverrides {
  stateDir: string;
  /** Append every journaled owned object here (one JSON line each), as the lifecycle's journal does. */
  journalFile?: string;
  sysfsRoot?: string;
  netSysfsRoot?: string;
  tunDevice?: string;
  netAdmin?: boolean;
}

type Op =
  | { op: 'setup'; backend: BackendName; req: JsonRequest; host: HostOverrides }
  | { op: 'release'; backend: BackendName; obj: OwnedObject; host: HostOverrides }
  | { op: 'probe'; backend: BackendName; req: Partial<JsonRequest>; host: HostOverrides };

export interface DriverError { name: string; message: string; exitCode: number; line: string }

interface DriverOutput {
  ok: boolean;
  endpoint?: Omit<KernelEndpoint, 'fds'> & { fdCount: number };
  availability?: { available: boolean; reason: string };
  error?: DriverError;
  undoFailures?: string[];
  /** What setup journaled through rb.add(..., owned). */
  journal?: { backend: string; obj: OwnedObject }[];
  ms: number;
}

async function loadBackend(name: BackendName): Promise<KernelBackend> {
  switch (name) {
    case 'macvtap': return (await import('../../src/backends/kernel/macvtap.js')).macvtapBackend;
    case 'veth': return (await import('../../src/backends/kernel/veth.js')).vethBackend;
    case 'route': return (await import('../../src/backends/kernel/route.js')).routeBackend;
    case 'nat': return (await import('../../src/backends/kernel/nat.js')).natBackend;
  }
}

async function driverMain(): Promise<void> {
  const { hostContext } = await import('../../src/host/context.js');
  const { Rollback } = await import('../../src/state/rollback.js');
  const { parseMac } = await import('../../src/net/mac.js');
  const op = JSON.parse(process.argv[2]!) as Op;
  const host: HostContext = {
    ...hostContext(process.env, true, op.host.netAdmin ?? true),
    stateDir: op.host.stateDir,
    ...(op.host.sysfsRoot ? { sysfsRoot: op.host.sysfsRoot } : {}),
    ...(op.host.netSysfsRoot ? { netSysfsRoot: op.host.netSysfsRoot } : {}),
    ...(op.host.tunDevice ? { tunDevice: op.host.tunDevice } : {}),
  };
  const backend = await loadBackend(op.backend);
  const toReq = <T extends Partial<JsonRequest>>(r: T) => ({ ...r, ...(r.mac !== undefined ? { mac: parseMac(r.mac) ?? Buffer.from(r.mac, 'hex') } : {}) });
  const out: DriverOutput = { ok: false, ms: 0, journal: [] };
  const t0 = performance.now();
  let fds: number[] = [];
  const { appendFileSync } = await import('node:fs');
  // Like the helper's journal: every owned object is on disk before the step that made it returns.
  const rb = new Rollback((owned) => {
    out.journal!.push(owned);
    if (op.host.journalFile) appendFileSync(op.host.journalFile, JSON.stringify(owned) + '\n');
  });
  try {
    if (op.op === 'setup') {
      const ep = backend.setup(toReq(op.req) as EndpointRequest, host, rb);
      fds = ep.fds;
      const { fds: _f, ...rest } = ep;
      out.endpoint = { ...rest, fdCount: fds.length };
    } else if (op.op === 'release') {
      backend.release(op.obj, host);
    } else {
      out.availability = backend.probe(toReq(op.req) as Partial<EndpointRequest>, host);
    }
    out.ok = true;
  } catch (e) {
    out.undoFailures = rb.undoAllSync();
    const d = describeError(e);
    out.error = { name: e instanceof Error ? e.constructor.name : 'unknown', message: e instanceof Error ? e.message : String(e), exitCode: d.exitCode, line: d.line };
    if (!(e instanceof HelperError)) out.error.message += `\n${(e as Error).stack}`;
  }
  out.ms = performance.now() - t0;
  if (out.ok && op.op === 'setup') {
    rb.commit();
    // One message with every fd, as the helper protocol does for its one fd.
    sendWithFds(3, Buffer.from([0]), fds);
    for (const fd of fds) closeFd(fd);
  }
  process.stdout.write(JSON.stringify(out) + '\n');
  process.exitCode = out.ok ? 0 : 1;
}

function runDriver(ns: NetNs, op: Op, faultAfterStep?: number): { out: DriverOutput; fds: number[]; stderr: string } {
  const r = spawnDriver(ns, op, faultAfterStep);
  if (r.signal) {
    for (const fd of r.fds) closeFd(fd);
    throw new Error(`driver killed by ${r.signal}: ${r.stderr}`);
  }
  const out = parseDriverOutput(r.stdout, r.stderr, r.status, r.fds);
  return { out, fds: r.fds, stderr: r.stderr };
}

function spawnDriver(ns: NetNs, op: Op, faultAfterStep?: number): { stdout: string; stderr: string; status: number | null; signal: string | null; fds: number[] } {
  const [ours, theirs] = socketPair();
  let r;
  try {
    r = spawnSync('ip', ['netns', 'exec', ns.name, process.execPath, DRIVER, JSON.stringify(op)], {
      stdio: ['ignore', 'pipe', 'pipe', theirs],
      env: { ...process.env, QNH_KERNEL_DRIVER: '1', ...(faultAfterStep ? { QEMU_NET_HELPER_FAULT_AFTER_STEP: String(faultAfterStep) } : {}) },
      encoding: 'utf8',
      timeout: 20_000,
    });
  } finally {
    closeFd(theirs);
  }
  let fds: number[] = [];
  try {
    fds = recvWithFds(ours, new Uint8Array(8), 0, 8, 0x40 /* MSG_DONTWAIT */).fds;
  } catch { /* nothing sent */ }
  closeFd(ours);
  return { stdout: r.stdout ?? '', stderr: r.stderr ?? '', status: r.status, signal: r.signal, fds };
}

export interface CrashOutcome {
  /** The driver was SIGKILLed after step N (false: setup finished first). */
  killed: boolean;
  /** What reached the journal file before the kill (or the whole journal). */
  journal: { backend: string; obj: OwnedObject }[];
  setup?: Setup;
}

/**
 * Runs setup with QEMU_NET_HELPER_FAULT_AFTER_STEP=step: the process is
 * SIGKILLed right after its step-th undo registration, as by a real crash.
 */
export function setupCrashingInNs(ns: NetNs, backend: BackendName, req: JsonRequest, host: HostOverrides & { journalFile: string }, step: number): CrashOutcome {
  const { readFileSync, rmSync } = fsSync;
  rmSync(host.journalFile, { force: true });
  const r = spawnDriver(ns, { op: 'setup', backend, req, host }, step);
  let text = '';
  try { text = readFileSync(host.journalFile, 'utf8'); } catch { /* nothing journaled */ }
  const journal = text.split('\n').filter(Boolean).map((l) => JSON.parse(l) as { backend: string; obj: OwnedObject });
  if (r.signal === 'SIGKILL') {
    for (const fd of r.fds) closeFd(fd);
    return { killed: true, journal };
  }
  const out = parseDriverOutput(r.stdout, r.stderr, r.status, r.fds);
  if (!out.ok || !out.endpoint) throw new Error(`setup failed: ${out.error?.line ?? r.stderr}`);
  return { killed: false, journal, setup: { ep: out.endpoint, fds: r.fds, ms: out.ms, journal: out.journal ?? [] } };
}

function parseDriverOutput(stdout: string, stderr: string, status: number | null, fds: number[]): DriverOutput {
  const line = stdout.trim().split('\n').pop() ?? '';
  try {
    return JSON.parse(line) as DriverOutput;
  } catch {
    for (const fd of fds) closeFd(fd);
    throw new Error(`driver produced no result (status ${status}): ${stderr}${stdout}`);
  }
}

/** Like setupInNs, without blocking: for running several helpers at the same moment. */
export async function setupInNsAsync(ns: NetNs, backend: BackendName, req: JsonRequest, host: HostOverrides): Promise<Setup> {
  const [ours, theirs] = socketPair();
  const op: Op = { op: 'setup', backend, req, host };
  const child = spawn('ip', ['netns', 'exec', ns.name, process.execPath, DRIVER, JSON.stringify(op)], {
    stdio: ['ignore', 'pipe', 'pipe', theirs],
    env: { ...process.env, QNH_KERNEL_DRIVER: '1' },
  });
  closeFd(theirs);
  let stdout = '';
  let stderr = '';
  child.stdout!.setEncoding('utf8').on('data', (d: string) => { stdout += d; });
  child.stderr!.setEncoding('utf8').on('data', (d: string) => { stderr += d; });
  const status = await new Promise<number | null>((res) => child.once('close', (code) => res(code)));
  let fds: number[] = [];
  try {
    fds = recvWithFds(ours, new Uint8Array(8), 0, 8, 0x40).fds;
  } catch { /* nothing sent */ }
  closeFd(ours);
  const out = parseDriverOutput(stdout, stderr, status, fds);
  if (!out.ok || !out.endpoint) throw new Error(`setup failed: ${out.error?.line ?? stderr}`);
  return { ep: out.endpoint, fds, ms: out.ms, journal: out.journal ?? [] };
}

export interface Setup {
  ep: Omit<KernelEndpoint, 'fds'> & { fdCount: number };
  fds: number[];
  /** Time the backend's setup() took inside the driver, ms. */
  ms: number;
  /** Owned objects as journaled through rb.add (what the lifecycle records keep). */
  journal: { backend: string; obj: OwnedObject }[];
}

/** Runs setup in `ns`; throws with the driver's error line when it fails. */
export function setupInNs(ns: NetNs, backend: BackendName, req: JsonRequest, host: HostOverrides): Setup {
  const { out, fds, stderr } = runDriver(ns, { op: 'setup', backend, req, host });
  if (!out.ok || !out.endpoint) throw new Error(`setup failed: ${out.error?.line ?? stderr}`);
  return { ep: out.endpoint, fds, ms: out.ms, journal: out.journal ?? [] };
}

/** Runs a setup expected to fail; returns the typed error it produced and the rollback's failures. */
export function setupFailsInNs(ns: NetNs, backend: BackendName, req: JsonRequest, host: HostOverrides): DriverError & { undoFailures: string[] } {
  const { out, fds } = runDriver(ns, { op: 'setup', backend, req, host });
  for (const fd of fds) closeFd(fd);
  if (out.ok || !out.error) throw new Error(`setup unexpectedly succeeded: ${JSON.stringify(out.endpoint)}`);
  return { ...out.error, undoFailures: out.undoFailures ?? [] };
}

/** The contract with the lifecycle records: every owned object in ep.owned was journaled, by this kernel. */
export function assertJournaled(s: Setup, backend: BackendName): void {
  assert.deepEqual(s.journal.map((j) => j.backend), s.journal.map(() => backend), 'journaled for this kernel');
  assert.deepEqual(s.journal.map((j) => j.obj), s.ep.owned, 'ep.owned is exactly what was journaled, in order');
}

/** Releases every owned object, each from its JSON alone, in a fresh process. */
export function releaseInNs(ns: NetNs, backend: BackendName, owned: OwnedObject[], host: HostOverrides): void {
  for (const obj of [...owned].reverse()) {
    const { out, stderr } = runDriver(ns, { op: 'release', backend, obj: JSON.parse(JSON.stringify(obj)) as OwnedObject, host });
    if (!out.ok) throw new Error(`release of ${obj.kind} failed: ${out.error?.line ?? stderr}`);
  }
}

export function probeInNs(ns: NetNs, backend: BackendName, req: Partial<JsonRequest>, host: HostOverrides): { available: boolean; reason: string } {
  const { out, stderr } = runDriver(ns, { op: 'probe', backend, req, host });
  if (!out.ok || !out.availability) throw new Error(`probe failed: ${out.error?.line ?? stderr}`);
  return out.availability;
}

// ---- frames, for tests that play the guest on a tap/macvtap fd ----

const F_GETFL = 3;
const F_SETFL = 4;
const O_NONBLOCK = 0o4000;

/** Makes reads on fd non-blocking (test side only: QEMU sets this itself). */
export function setNonBlocking(fd: number): void {
  const fl = c.fcntl(fd, F_GETFL, 0);
  c.fcntl(fd, F_SETFL, fl | O_NONBLOCK);
}

export function writeFrame(fd: number, frame: Buffer, vnetHdrLen: number): void {
  const buf = Buffer.concat([Buffer.alloc(vnetHdrLen), frame]);
  const n = Number(c.write(fd, buf, buf.length));
  assert.equal(n, buf.length, `write to fd ${fd} returned ${n}`);
}

/** Reads frames until `match` accepts one or `timeoutMs` passes; `onFrame` sees every frame (to answer ARP). */
/** Reads frames from fd (or from any of several queue fds: a multiqueue tap spreads flows over them) until one matches. */
export async function readFrameUntil(fd: number | number[], vnetHdrLen: number, match: (f: Buffer) => boolean, timeoutMs = 15_000, onFrame?: (f: Buffer) => void): Promise<Buffer | null> {
  const fds = Array.isArray(fd) ? fd : [fd];
  const buf = Buffer.alloc(65536);
  const deadline = Date.now() + timeoutMs;
  while (Date.now() < deadline) {
    let got = false;
    for (const q of fds) {
      const n = Number(c.read(q, buf, buf.length));
      if (n <= 0) continue;
      got = true;
      const f = Buffer.from(buf.subarray(vnetHdrLen, n));
      onFrame?.(f);
      if (match(f)) return f;
    }
    if (!got) await new Promise((r) => setTimeout(r, 2));
  }
  return null;
}

export function macBytes(mac: string): Buffer {
  return Buffer.from(mac.split(':').map((h) => parseInt(h, 16)));
}
function ipBytes(ip: string): Buffer {
  return Buffer.from(ip.split('.').map(Number));
}

function checksum(b: Buffer): number {
  let sum = 0;
  for (let i = 0; i + 1 < b.length; i += 2) sum += b.readUInt16BE(i);
  if (b.length % 2) sum += b[b.length - 1]! << 8;
  while (sum >> 16) sum = (sum & 0xffff) + (sum >> 16);
  return ~sum & 0xffff;
}

export function icmpEcho(srcMac: string, dstMac: string, srcIp: string, dstIp: string, id: number, seq: number): Buffer {
  const icmp = Buffer.alloc(8 + 32);
  icmp[0] = 8; // echo request
  icmp.writeUInt16BE(id, 4);
  icmp.writeUInt16BE(seq, 6);
  icmp.fill(0x61, 8);
  icmp.writeUInt16BE(checksum(icmp), 2);
  const iph = Buffer.alloc(20);
  iph[0] = 0x45;
  iph.writeUInt16BE(20 + icmp.length, 2);
  iph.writeUInt16BE(0x4000, 6); // DF
  iph[8] = 64;
  iph[9] = 1;
  ipBytes(srcIp).copy(iph, 12);
  ipBytes(dstIp).copy(iph, 16);
  iph.writeUInt16BE(checksum(iph), 10);
  return Buffer.concat([macBytes(dstMac), macBytes(srcMac), Buffer.from([0x08, 0x00]), iph, icmp]);
}

/** An ICMP echo reply to `ip` with this id. */
export function isEchoReply(f: Buffer, dstIp: string, id: number): boolean {
  return f.length >= 42 && f.readUInt16BE(12) === 0x0800 && f[23] === 1 && f[34] === 0
    && f.subarray(30, 34).equals(ipBytes(dstIp)) && f.readUInt16BE(38) === id;
}

/** The target address of an ARP request, or null. */
export function arpRequestTarget(f: Buffer): string | null {
  if (f.length < 42 || f.readUInt16BE(12) !== 0x0806 || f.readUInt16BE(20) !== 1) return null;
  return Array.from(f.subarray(38, 42)).join('.');
}

export function arpReply(request: Buffer, myMac: string, myIp: string): Buffer {
  const sha = request.subarray(22, 28);
  const spa = request.subarray(28, 32);
  const arp = Buffer.alloc(28);
  arp.writeUInt16BE(1, 0);
  arp.writeUInt16BE(0x0800, 2);
  arp[4] = 6;
  arp[5] = 4;
  arp.writeUInt16BE(2, 6);
  macBytes(myMac).copy(arp, 8);
  ipBytes(myIp).copy(arp, 14);
  sha.copy(arp, 18);
  spa.copy(arp, 24);
  return Buffer.concat([Buffer.from(sha), macBytes(myMac), Buffer.from([0x08, 0x06]), arp]);
}

export function rxPackets(ns: NetNs, dev: string): number {
  const l = JSON.parse(ns.ip('-s', '-j', 'link', 'show', 'dev', dev)) as { stats64: { rx: { packets: number } } }[];
  return l[0]!.stats64.rx.packets;
}

const isMain = process.argv[1] !== undefined && import.meta.url === pathToFileURL(process.argv[1]).href;

if (isMain && process.env.QNH_KERNEL_DRIVER === '1') {
  await driverMain();
} else if (isMain) {
  const { mkdtempSync, rmSync } = await import('node:fs');
  const { tmpdir } = await import('node:os');
  const { join } = await import('node:path');
  const { NetNs } = await import('../lib/netns.js');
  describe('kernel driver: probes inside a network namespace', () => {
    it('each kernel answers probe() from inside the namespace', () => {
      const ns = NetNs.create('qnhkd');
      const dir = mkdtempSync(join(tmpdir(), 'qnh-kd-'));
      try {
        ns.ip('link', 'add', 'up0', 'type', 'veth', 'peer', 'name', 'up1');
        ns.addBridge('br0');
        const host = { stateDir: dir };
        assert.deepEqual(probeInNs(ns, 'macvtap', { dev: 'up0', mode: 'vepa' }, host).available, true);
        const noDev = probeInNs(ns, 'macvtap', { mode: 'vepa' }, host);
        assert.equal(noDev.available, false);
        assert.match(noDev.reason, /parent device/);
        assert.match(probeInNs(ns, 'macvtap', { dev: 'gone0' }, host).reason, /'gone0' does not exist/);
        assert.match(probeInNs(ns, 'macvtap', { mode: 'nat', dev: 'up0' }, host).reason, /cannot be made with a macvtap/);
        assert.equal(probeInNs(ns, 'veth', { dev: 'br0' }, host).available, true);
        assert.match(probeInNs(ns, 'veth', { dev: 'up0' }, host).reason, /not a bridge/);
        assert.equal(probeInNs(ns, 'route', { dev: 'up0', guestIp: '10.1.1.1' }, host).available, true);
        assert.match(probeInNs(ns, 'route', { dev: 'up0', guestIp: '::1' }, host).reason, /not IPv4/);
        assert.equal(probeInNs(ns, 'nat', {}, host).available, true);
        assert.match(probeInNs(ns, 'nat', { dev: 'br0' }, host).reason, /not a NAT network made by qemu-net-helper/);
        assert.match(probeInNs(ns, 'nat', { subnet: '10.0.0.1/24' }, host).reason, /host bits/);
        assert.match(probeInNs(ns, 'route', { dev: 'up0' }, { ...host, netAdmin: false }).reason, /CAP_NET_ADMIN/);
        // probe changed nothing
        assert.deepEqual(ns.links().sort(), ['br0', 'lo', 'up0', 'up1']);
      } finally {
        ns.destroy();
        rmSync(dir, { recursive: true, force: true });
      }
    });
  });
}
