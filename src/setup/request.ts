// The setup tier's request, and how each way in maps into it: the helper's
// arguments (directly or through the broker), `up`'s options and `run`'s NIC
// specs. Pure: what differs between them is data here, not a copy of the setup.
import type { TransportName } from '../backends/types.js';
import type { HelperArgs } from '../helper/args.js';
import type { NicSpec } from '../launch/nic-spec.js';
import type { UpOptions } from './up.js';
import type { RequestFlags } from '../policy/request.js';
import type { OwnerRef } from '../state/owner.js';

/**
 * Who the endpoint lives for: `owner` QEMU (known by its socket), `fd` the
 * fd QEMU holds (owner unknown), `manual` until `down` (`up`), `run` the
 * QEMU `run` starts (this process until then).
 */
export type SetupLifetime = 'owner' | 'fd' | 'manual' | 'run';

export interface SetupRequest {
  /** What was asked: these flags win over the profile, the profile over defaults. */
  flags: RequestFlags;
  /** The profile to merge under the flags; `required`: named explicitly, so its absence is an error. */
  profile?: { name: string; required: boolean };
  /** How the caller named the profile and this request, for the error when it is missing. */
  naming: { profileFlag: string; prefix: string };
  /** Transports the caller can take, best first. */
  protocols: readonly TransportName[];
  /** A profile's own `protocols` narrow the caller's (the helper's; `up` and `run` say what they want). */
  profileNarrows: boolean;
  lifetime: SetupLifetime;
  /** The process whose exit ends the endpoint, when known (QEMU, found by its socket). */
  owner: OwnerRef | null;
  /** Who owns claims (SR-IOV VFs) when the owner is unknown: the process that will watch the endpoint. */
  fallbackOwnerPid?: number;
  /** An id chosen by the caller (`up --id`). */
  id?: string;
}

const HELPER_NAMING = { profileFlag: '--profile', prefix: '' };

/** The helper's flags on QEMU's socket; `owner` is QEMU when its pid is visible. */
export function helperRequest(a: HelperArgs, protocols: readonly TransportName[], owner: OwnerRef | null, fallbackOwnerPid?: number): SetupRequest {
  // libvirt passes only --br: a profile named like the bridge is used when it exists.
  const profile = a.profile !== undefined ? { name: a.profile, required: a.profile !== '' } : a.bridgeGiven ? { name: a.bridge, required: false } : undefined;
  return {
    flags: a, ...(profile ? { profile } : {}), naming: HELPER_NAMING, protocols, profileNarrows: true,
    lifetime: owner ? 'owner' : 'fd', owner, ...(fallbackOwnerPid !== undefined ? { fallbackOwnerPid } : {}),
  };
}

/** `up`'s options: persistent, tap or macvtap unless a transport is named. */
export function upRequest(o: UpOptions): SetupRequest {
  const flags: RequestFlags = {
    useVnet: o.vnetHdr ?? true, bridge: o.dev ?? 'br0',
    ...(o.mode ? { mode: o.mode } : {}), ...(o.dev ? { dev: o.dev } : {}), ...(o.mac ? { mac: o.mac } : {}),
    ...(o.mtu ? { mtu: o.mtu } : {}), ...(o.vfPool ? { vfPool: o.vfPool } : {}),
  };
  return {
    flags, ...(o.profile ? { profile: { name: o.profile, required: true } } : {}), naming: HELPER_NAMING,
    protocols: o.transport ? [o.transport] : ['tap', 'macvtap'], profileNarrows: false, lifetime: 'manual', owner: null,
    ...(o.id ? { id: o.id } : {}),
  };
}

/** The transports `run` can hand QEMU by inheritance, as its vhost= wish allows. */
export function transportsFor(spec: Pick<NicSpec, 'vhost'>): TransportName[] {
  if (spec.vhost === 'user') return ['vhost-user'];
  if (spec.vhost === 'on') return ['vhost-kernel'];
  if (spec.vhost === 'off') return ['tap', 'macvtap'];
  return ['vhost-kernel', 'tap', 'macvtap'];
}

/** One `run --nic`: only an explicit profile= is used (br= names a bridge, never a profile). */
export function nicRequest(spec: NicSpec): SetupRequest {
  return {
    flags: spec.args, ...(spec.args.profile ? { profile: { name: spec.args.profile, required: true } } : {}),
    naming: { profileFlag: 'profile=', prefix: `--nic '${spec.text}': ` }, protocols: transportsFor(spec), profileNarrows: false,
    lifetime: 'run', owner: null,
  };
}
