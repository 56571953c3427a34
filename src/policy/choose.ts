// From a policy's ordered candidates to a working (kernel implementation,
// transport) pair on this host: skip what cannot apply (and say why), try the
// rest in order, undo a failed attempt completely before the next one.
import { ExitCode, HelperError, NotFoundError, UnsupportedError, UsageError } from '../errors.js';
import { linkShow } from '../net/ip.js';
import { closeFd } from '../sys/libc.js';
import type { Rollback } from '../state/rollback.js';
import { existsSync, readFileSync } from 'node:fs';
import { join } from 'node:path';
import type { EndpointRequest, HostContext, KernelBackend, KernelEndpoint, Transport, TransportName, TransportResult } from '../backends/types.js';
import type { ParsedMode } from './mode.js';
import type { Candidate, ModePolicy } from './schema.js';

export type DevKind = 'bridge' | 'ethernet' | 'sriov-pf' | 'absent';

export interface ExplainEntry {
  kernel: string;
  transport: string;
  decision: 'taken' | 'skipped' | 'failed';
  reason: string;
}

export interface Choice {
  candidate: Candidate;
  endpoint: KernelEndpoint;
  transport: TransportResult;
  explain: ExplainEntry[];
}

/** Closes our references to the chosen endpoint's fds (once each: transports may pass the kernel's on). */
export function closeChoiceFds(choice: Choice): void {
  for (const fd of new Set([...choice.endpoint.fds, ...choice.transport.fds])) closeFd(fd);
}

export interface Registries {
  kernels: ReadonlyMap<string, KernelBackend>;
  transports: ReadonlyMap<string, Transport>;
}

function devKind(dev: string | undefined, host: HostContext): { kind: DevKind; detail: string } {
  if (!dev) return { kind: 'absent', detail: 'no --dev given' };
  const l = linkShow(dev);
  if (!l) return { kind: 'absent', detail: `${dev} does not exist` };
  const k = l.linkinfo?.info_kind;
  if (k === 'bridge') return { kind: 'bridge', detail: `${dev} is a bridge` };
  const total = join(host.sysfsRoot, 'class/net', dev, 'device/sriov_totalvfs');
  if (existsSync(total) && Number(readFileSync(total, 'utf8').trim()) > 0) return { kind: 'sriov-pf', detail: `${dev} is an SR-IOV physical function` };
  return { kind: 'ethernet', detail: `${dev} is a${k ? ` ${k}` : 'n ethernet'} device` };
}

function whenMatches(want: string | undefined, kind: DevKind): boolean {
  if (!want || want === 'any') return true;
  if (want === 'ethernet') return kind === 'ethernet' || kind === 'sriov-pf';
  if (want === 'plain') return kind === 'ethernet';
  return want === kind;
}

// Failures that mean "this way does not work here, try the next one";
// anything else (bad input, denied access, bugs) stops the search.
const RETRYABLE = new Set<number>([ExitCode.UNSUPPORTED, ExitCode.EXHAUSTED, ExitCode.NOT_FOUND, ExitCode.SETUP_FAILED, ExitCode.PERMISSION]);

export function realize(parsed: ParsedMode, full: ModePolicy, req: EndpointRequest, host: HostContext, reg: Registries, allowed: readonly TransportName[], rb: Rollback): Choice {
  const explain: ExplainEntry[] = [];
  const mode = parsed.name;
  const dk = devKind(req.dev, host);
  // What --dev must be is decided by the candidates this caller can take at all.
  const usable = full.candidates.filter((c) => allowed.includes(c.transport));
  const policy = { ...full, candidates: usable.length ? usable : full.candidates };
  if (dk.kind === 'absent' && req.dev) {
    const needsDev = policy.candidates.every((c) => c.when && c.when.devKind !== 'absent' && c.when.devKind !== 'any');
    // A NAT network's --dev names the bridge it makes: absent is fine unless a candidate needs it.
    if (needsDev || parsed.kind !== 'nat') throw new NotFoundError(`device '${req.dev}' does not exist in this network namespace`, `pass an existing interface with --dev (mode ${mode})`);
  }
  if (!req.dev && policy.candidates.every((c) => c.when && c.when.devKind !== 'absent' && c.when.devKind !== 'any')) {
    throw new UsageError(`mode ${mode} needs --dev=DEVICE (the uplink or parent interface)`, 'pass --dev or set "dev" in the profile');
  }
  // --dev exists but is of a kind no candidate of this mode can use: say so
  // plainly rather than listing every skipped candidate.
  if (req.dev && dk.kind !== 'absent' && !policy.candidates.some((c) => whenMatches(c.when?.devKind, dk.kind))) {
    const wanted = [...new Set(policy.candidates.map((c) => c.when?.devKind ?? 'any'))].join(' or ');
    throw new NotFoundError(`${dk.detail}; mode ${mode} needs --dev of kind ${wanted}`, `pass a suitable device with --dev, or another --mode`);
  }
  let lastError: HelperError | undefined;
  for (const cand of full.candidates) {
    const entry = (decision: ExplainEntry['decision'], reason: string): void => { explain.push({ kernel: cand.kernel, transport: cand.transport, decision, reason }); };
    if (!allowed.includes(cand.transport)) { entry('skipped', `transport ${cand.transport} not offered by the caller (accepts: ${allowed.join(', ')})`); continue; }
    const kernel = reg.kernels.get(cand.kernel);
    if (!kernel) { entry('skipped', `kernel implementation '${cand.kernel}' is unknown`); continue; }
    const transport = reg.transports.get(cand.transport);
    if (!transport) { entry('skipped', `transport '${cand.transport}' is unknown`); continue; }
    if (!transport.accepts(kernel.yields)) { entry('skipped', `transport ${cand.transport} cannot carry a ${cand.kernel} endpoint`); continue; }
    if (!whenMatches(cand.when?.devKind, dk.kind)) { entry('skipped', `needs --dev of kind ${cand.when!.devKind}: ${dk.detail}`); continue; }
    const tp = transport.probe(host);
    if (!tp.available) { entry('skipped', `transport ${cand.transport}: ${tp.reason}`); continue; }
    const full: EndpointRequest = { ...req, params: { ...cand.params, ...req.params } };
    const kp = kernel.probe(full, host);
    if (!kp.available) { entry('skipped', `${cand.kernel}: ${kp.reason}`); continue; }
    const sub = rb.child();
    try {
      const endpoint = kernel.setup(full, host, sub);
      const tr = transport.attach(endpoint, full, host, sub);
      rb.adopt(sub);
      entry('taken', `${kp.reason}; ${tp.reason}`);
      return { candidate: cand, endpoint, transport: tr, explain };
    } catch (e) {
      sub.undoAllSync();
      if (e instanceof HelperError && RETRYABLE.has(e.exitCode)) {
        entry('failed', e.message);
        lastError = e;
        continue;
      }
      throw e;
    }
  }
  const summary = explain.map((x) => `${x.kernel}/${x.transport}: ${x.reason}`).join('; ');
  if (lastError) throw new HelperError(lastError.exitCode, `mode ${mode}: no candidate worked (${summary})`, lastError.hint);
  throw new UnsupportedError(`mode ${mode}: no candidate applies on this host (${summary})`, 'run "qemu-net-helper probe" to see what this host offers');
}
