// The policy setup of one NIC, for every way in that has a SetupRequest (the
// helper's policy path, the broker, `up`, `run`): flags and profile are
// merged, and through the tier's one order (tier.ts) every resource the
// result names is authorized for the caller, the MAC and id checked, and the
// chosen candidate realized into a journaled record. The result is prepared: the caller hands its fds on (a socket,
// QEMU's inheritance) and then commits, or undoes everything made so far.
import { kernels, transports } from '../backends/registry.js';
import type { HostContext } from '../host/context.js';
import { authorize, parseAcl } from '../access/acl.js';
import type { Caller } from '../access/caller.js';
import { resourcesOf } from '../access/resources.js';
import { ConfigError, UsageError } from '../errors.js';
import { completeRecord } from '../lifecycle/record.js';
import { closeChoiceFds, realize, type Choice } from '../policy/choose.js';
import { loadProfile, policyFor } from '../policy/load.js';
import type { ParsedMode } from '../policy/mode.js';
import { buildRequest } from '../policy/request.js';
import { loadEndpoint, newEndpointId, validEndpointId, type EndpointRecord } from '../state/endpoints.js';
import { selfOwner, type OwnerRef } from '../state/owner.js';
import { checkMacFree } from './mac-claim.js';
import { wantedBy } from '../lifecycle/reap.js';
import type { SetupRequest } from './request.js';
import { prepareSetup, type PreparedSetup, type SetupDraft } from './tier.js';

export interface TierContext {
  host: HostContext;
  /** Configuration directory (policies, profiles): fixed unless the caller is root. */
  config: string;
  /**
   * Who asks, and the ACL that answers for them (null: root's own `up`, which
   * answers to none). Null for `run`, whose caller is the one making
   * everything: it is checked against no ACL and no other endpoint's MAC.
   */
  admission: { acl: string | null; caller: Caller } | null;
}

/** A NIC set up and not yet handed on. */
export class PreparedEndpoint {
  constructor(readonly mode: ParsedMode, readonly choice: Choice, readonly setup: PreparedSetup, private readonly manual: boolean) {}

  get record(): EndpointRecord { return this.setup.record; }

  /**
   * The fds are handed on (QEMU holds its own): ours close, the undo is
   * forgotten, and the record stays when something outlives the fds (macvtap,
   * routes, NAT, VF claims) or the endpoint is `up`'s. `owner` replaces the
   * record's owner first (`run`: the QEMU it started). Returns whether it stays.
   */
  commit(owner?: OwnerRef): boolean {
    closeChoiceFds(this.choice);
    const durable = this.manual || this.record.owned.length > 0;
    if (durable) {
      completeRecord(this.record, this.choice);
      if (owner) this.record.owner = owner;
    }
    this.setup.commit(durable);
    return durable;
  }

  /**
   * Undoes everything made for this NIC, our fds included (their undo steps
   * close them); returns what could not be undone (the record then stays for gc).
   */
  undo(): string[] {
    return this.setup.undo();
  }
}

export function prepareEndpoint(r: SetupRequest, ctx: TierContext): PreparedEndpoint {
  const profileName = r.profile?.name || null;
  const profile = profileName ? loadProfile(ctx.config, profileName) : null;
  if (r.profile?.required && !profile) throw new ConfigError(`${r.naming.prefix}no profile '${r.profile.name}' in ${ctx.config}/profiles`, `create it or drop ${r.naming.profileFlag}`);
  const { mode, req } = buildRequest(r.flags, profile);
  const usedProfile = profile ? profileName : null;
  const adm = ctx.admission;
  const protocols = profile?.protocols && r.profileNarrows ? profile.protocols.filter((p) => r.protocols.includes(p)) : r.protocols;
  const id = r.id ?? newEndpointId();
  const manual = r.lifetime === 'manual';
  const draft: SetupDraft = {
    mode: mode.name, id,
    // `run` releases everything itself once QEMU exits; until QEMU runs, the
    // record's owner is this process, so gc cleans up if we are killed first.
    owner: r.lifetime === 'run' ? selfOwner() : manual ? null : r.owner,
    ...(adm ? { uid: adm.caller.uid } : {}),
    ...(r.lifetime !== 'run' ? { lifetime: r.lifetime } : {}),
    wanted: wantedBy(req, adm?.caller.uid), saveNow: manual,
  };
  if (manual) req.persist = true;
  // Claims (SR-IOV VFs) belong to QEMU, not to the short-lived process making
  // them; a manual endpoint's to init (pid 1), whose identity never changes.
  const claimOwner = manual ? 1 : r.lifetime === 'run' ? process.pid : r.owner?.pid ?? r.fallbackOwnerPid;
  if (claimOwner !== undefined) req.params.ownerPid = claimOwner;
  req.params.endpointId = id;
  if (adm) {
    // Whoever asked owns what is made for them (the vhost-user switch's port: only their QEMU may connect).
    req.params.ownerUid = adm.caller.uid;
    req.params.ownerGid = adm.caller.gid;
  }
  const { setup, value: choice } = prepareSetup(draft, ctx.host, {
    admit: () => { if (adm && adm.acl !== null) authorize(adm.acl, parseAcl(adm.acl), adm.caller, resourcesOf(mode, req, usedProfile, adm.caller)); },
    vet: () => {
      if (adm) checkMacFree(req.mac, { host: ctx.host, config: ctx.config, caller: adm.caller, profile: usedProfile });
      const policy = policyFor(ctx.config, mode);
      if (!validEndpointId(id)) throw new UsageError(`endpoint id '${id}' is not valid`, 'use letters, digits, . _ - (at most 64)');
      if (r.id && loadEndpoint(ctx.host.stateDir, id)) throw new UsageError(`endpoint '${id}' already exists`, `take it down first: qemu-net-helper down ${id}`);
      return policy;
    },
    realize: (s, policy) => realize(mode, policy, req, ctx.host, { kernels, transports }, protocols, s.rb),
  });
  return new PreparedEndpoint(mode, choice, setup, manual);
}

export interface SetupResult {
  mode: ParsedMode;
  record: EndpointRecord;
  choice: Choice;
  /** Whether a record stays behind (something outlives QEMU's fd). */
  durable: boolean;
}

/** Prepares, lets `deliver` hand the fds on (a failed send undoes it all), and commits. */
export function setupEndpoint(r: SetupRequest, ctx: TierContext, deliver?: (choice: Choice, mode: ParsedMode) => void): SetupResult {
  const p = prepareEndpoint(r, ctx);
  try {
    deliver?.(p.choice, p.mode);
  } catch (e) {
    p.undo();
    throw e;
  }
  const durable = p.commit();
  return { mode: p.mode, record: p.record, choice: p.choice, durable };
}
