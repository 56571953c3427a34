// The one setup path: the helper's policy path, `up` and the broker all come
// here. Flags and profile are merged, every resource the result names is
// authorized for the caller, a record is drafted and journaled step by step,
// the chosen candidate is realized, its fds are delivered, and only then is
// the setup committed; any failure undoes everything made so far.
import { kernels, transports } from '../backends/registry.js';
import type { TransportName } from '../backends/types.js';
import type { HostContext } from '../host/context.js';
import { authorize, parseAcl } from '../access/acl.js';
import type { Caller } from '../access/caller.js';
import { resourcesOf } from '../access/resources.js';
import { ConfigError, UsageError } from '../errors.js';
import { completeRecord, draftRecord, journalingRollback } from '../lifecycle/record.js';
import { closeChoiceFds, realize, type Choice } from '../policy/choose.js';
import { loadProfile, policyFor } from '../policy/load.js';
import type { ParsedMode } from '../policy/mode.js';
import { buildRequest, type RequestFlags } from '../policy/request.js';
import { loadEndpoint, newEndpointId, removeEndpoint, saveEndpoint, validEndpointId, type EndpointRecord } from '../state/endpoints.js';
import type { OwnerRef } from '../state/owner.js';
import { checkStateDir } from '../state/state-dir.js';
import { checkMacFree } from './mac-claim.js';

export interface SetupFlags extends RequestFlags {
  /** An explicit profile; otherwise a profile named like --br is used when it exists. */
  profile?: string;
}

export interface SetupOptions {
  host: HostContext;
  /** Configuration directory (policies, profiles): fixed unless the caller is root. */
  config: string;
  /** The ACL file; null only for root's own management commands (`up` run directly), which answer to none. */
  acl: string | null;
  caller: Caller;
  /** Transports the caller can take, best first. */
  protocols: readonly TransportName[];
  /** The process whose exit ends the endpoint (QEMU); null when it cannot be known. */
  owner: OwnerRef | null;
  /** Who owns VF claims when the owner is unknown (the process that will watch the endpoint). */
  fallbackOwnerPid?: number;
  /** `up`: everything persistent, lives until `down`. */
  manual?: boolean;
  id?: string;
  /** Hands the fds to QEMU; runs before the setup is committed, so a failed send undoes it. */
  deliver?: (choice: Choice, mode: ParsedMode) => void;
}

export interface SetupResult {
  mode: ParsedMode;
  record: EndpointRecord;
  choice: Choice;
  /** Whether a record stays behind (something outlives QEMU's fd). */
  durable: boolean;
}

export function setupEndpoint(flags: SetupFlags, o: SetupOptions): SetupResult {
  const profileName = flags.profile ?? (flags.bridgeGiven ? flags.bridge : undefined);
  const profile = profileName ? loadProfile(o.config, profileName) : null;
  if (flags.profile && !profile) throw new ConfigError(`no profile '${flags.profile}' in ${o.config}/profiles`, 'create it or drop --profile');
  const { mode, req } = buildRequest(flags, profile);
  checkStateDir(o.host.stateDir);
  if (o.acl !== null) authorize(o.acl, parseAcl(o.acl), o.caller, resourcesOf(mode, req, profile ? profileName! : null, o.caller));
  checkMacFree(req.mac, { host: o.host, config: o.config, caller: o.caller, profile: profile ? profileName! : null });
  const policy = policyFor(o.config, mode);
  const protocols = (profile?.protocols && !o.manual ? profile.protocols.filter((p) => o.protocols.includes(p)) : o.protocols);

  const id = o.id ?? newEndpointId();
  if (!validEndpointId(id)) throw new UsageError(`endpoint id '${id}' is not valid`, 'use letters, digits, . _ - (at most 64)');
  if (o.id && loadEndpoint(o.host.stateDir, id)) throw new UsageError(`endpoint '${id}' already exists`, `take it down first: qemu-net-helper down ${id}`);
  const record = draftRecord(mode.name, o.manual ? null : o.owner, id);
  record.uid = o.caller.uid;
  record.lifetime = o.manual ? 'manual' : o.owner ? 'owner' : 'fd';
  if (o.manual) {
    req.persist = true;
    saveEndpoint(o.host.stateDir, record);
  }
  const rb = journalingRollback(record, o.host.stateDir);
  // Claims (SR-IOV VFs) belong to QEMU, not to the short-lived process making
  // them; a manual endpoint's to init (pid 1), whose identity never changes.
  const claimOwner = o.manual ? 1 : o.owner?.pid ?? o.fallbackOwnerPid;
  if (claimOwner !== undefined) req.params.ownerPid = claimOwner;
  req.params.endpointId = id;
  // Whoever asked owns what is made for them (the vhost-user switch's port: only their QEMU may connect).
  req.params.ownerUid = o.caller.uid;
  req.params.ownerGid = o.caller.gid;
  try {
    const choice = realize(mode, policy, req, o.host, { kernels, transports }, protocols, rb);
    o.deliver?.(choice, mode);
    // Objects that outlive QEMU's fd (macvtap, routes, NAT, VF claims) stay;
    // only our own fd references go.
    closeChoiceFds(choice);
    rb.commit();
    const durable = o.manual === true || record.owned.length > 0;
    if (durable) {
      completeRecord(record, choice);
      saveEndpoint(o.host.stateDir, record);
    }
    return { mode, record, choice, durable };
  } catch (e) {
    const left = rb.undoAllSync();
    if (left.length === 0) removeEndpoint(o.host.stateDir, id);
    throw e;
  }
}
