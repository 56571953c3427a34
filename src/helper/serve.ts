// One helper request on QEMU's socket, whoever received it: the helper run
// by QEMU and the broker serving a client both come here, and only here is
// it decided whether qemu-bridge-helper's plain path serves it or the policy
// path. The policy path is loaded through `loadFull` (the fast path's bundle
// must not carry zod and every kernel implementation).
import { existsSync } from 'node:fs';
import type { Caller } from '../access/caller.js';
import type { HostContext } from '../host/context.js';
import type { EndpointRecord } from '../state/endpoints.js';
import { needsPolicy, type HelperArgs } from './args.js';
import type { PolicyOutcome, ServeContext } from './full.js';
import { serveBridgeTap, type HelperResult } from './run.js';

/** What the policy path's bundle offers (helper/full.ts). */
export interface FullHelper {
  serveHelper(a: HelperArgs, sock: number, ctx: ServeContext): PolicyOutcome;
  startWatcher(record: EndpointRecord, host: HostContext, sock: number): void;
}
export type LoadFull = () => FullHelper;

export interface HelperRequestContext {
  /** Evaluated only when needed: the plain path wants just the tun device. */
  host: () => HostContext;
  acl: string;
  config: string;
  caller: Caller;
  /** Owner of claims when QEMU cannot be identified (the broker: itself). */
  fallbackOwnerPid?: number;
  log: (line: string) => void;
  /** Checked after the ACL on the plain path: the helper itself needs CAP_NET_ADMIN, the broker has it. */
  requirePrivilege?: () => void;
  /** Who watches a durable endpoint: the direct helper leaves a watcher process; the broker watches it itself. */
  leaveWatcher: boolean;
}

export type HelperServed =
  | { path: 'bridge'; tap: HelperResult }
  | { path: 'policy'; outcome: PolicyOutcome };

/**
 * Whether the policy path serves `a`: any policy flag, or a profile file
 * named after --br, which makes even QEMU's plain call a policy call
 * (libvirt passes only --br).
 */
export function takesPolicyPath(a: HelperArgs, config: string): boolean {
  return needsPolicy(a) || (a.bridgeGiven === true && existsSync(`${config}/profiles/${a.bridge}.json`));
}

/** Serves `a` on QEMU's socket `sock` (the caller's own fd, or the broker's copy of the client's). */
export function serveHelperRequest(a: HelperArgs, sock: number, ctx: HelperRequestContext, loadFull: LoadFull): HelperServed {
  if (!takesPolicyPath(a, ctx.config)) {
    const tap = serveBridgeTap(a, sock, {
      acl: ctx.acl, caller: ctx.caller, tunDevice: () => ctx.host().tunDevice,
      ...(ctx.requirePrivilege ? { requirePrivilege: ctx.requirePrivilege } : {}),
    });
    return { path: 'bridge', tap };
  }
  const full = loadFull();
  const host = ctx.host();
  const outcome = full.serveHelper(a, sock, {
    host, acl: ctx.acl, config: ctx.config, caller: ctx.caller, log: ctx.log,
    ...(ctx.fallbackOwnerPid !== undefined ? { fallbackOwnerPid: ctx.fallbackOwnerPid } : {}),
  });
  if (outcome.durable && ctx.leaveWatcher) full.startWatcher(outcome.record, host, sock);
  return { path: 'policy', outcome };
}
