// CNI DEL and GC: both release attachments from their records with the
// helper's own releaseEndpoint (every step idempotent, so DEL twice, or DEL
// after a half-failed ADD, succeeds), then give the addresses back to IPAM.
import type { HostContext } from '../backends/types.js';
import { releaseEndpoint } from '../lifecycle/release.js';
import { sriovBackend, SRIOV_OWNED_KIND, type SriovOwnedData } from '../backends/kernel/sriov.js';
import { listClaims, releaseVf } from '../state/vf-claims.js';
import type { EndpointRecord } from '../state/endpoints.js';
import { ownerStatus, type OwnerRef } from '../state/owner.js';
import type { NetConf } from './config.js';
import type { CniEnv } from './env.js';
import { CniCode, CniError, toCniError } from './errors.js';
import { Ipam } from './ipam.js';
import { attachmentId, attachmentsOf, cniInfo, loadAttachment } from './store.js';

/**
 * A VF claim taken by an ADD that died before it journaled the VF: the claim
 * names this attachment, and its owner (pid 1) never goes, so nobody else
 * would ever drop it.
 */
function releaseOrphanClaims(id: string, host: HostContext): string[] {
  const failed: string[] = [];
  for (const c of listClaims(host.stateDir)) {
    if (c.record?.endpointId !== id) continue;
    try {
      const data = c.record.data as SriovOwnedData | undefined;
      if (data?.saved) sriovBackend.release({ kind: SRIOV_OWNED_KIND, data }, host);
      else releaseVf(host.stateDir, c.pci, { endpointId: id });
    } catch (e) {
      failed.push(`VF ${c.pci}: ${(e as Error).message}`);
    }
  }
  return failed;
}

function release(rec: EndpointRecord, host: HostContext): void {
  // After the record's own objects: a journaled VF is first moved back and restored there.
  const r = releaseEndpoint(rec, host);
  const failed = [...r.failed, ...releaseOrphanClaims(rec.id, host)];
  if (failed.length) throw new CniError(CniCode.HELPER_BASE + 10, `releasing attachment ${rec.id} failed`, failed.join('; '));
}

export function cmdDel(conf: NetConf, raw: Record<string, unknown>, env: CniEnv, host: HostContext): void {
  const rec = loadAttachment(host.stateDir, conf.name, env.containerId, env.ifname);
  if (rec) release(rec, host);
  else {
    // The helper's gc may have released an interrupted ADD's record already; a claim it could not see may remain.
    const failed = releaseOrphanClaims(attachmentId(conf.name, env.containerId, env.ifname), host);
    if (failed.length) throw new CniError(CniCode.HELPER_BASE + 10, 'releasing a VF claim failed', failed.join('; '));
  }
  // Always: an ADD that died after IPAM answered may have left only an address.
  if (conf.ipam) new Ipam(conf, env, raw).del();
}

function setupInFlight(rec: EndpointRecord): boolean {
  const by = rec.info.setupBy as OwnerRef | undefined;
  return rec.info.state === 'setting-up' && by !== undefined && ownerStatus(by) !== 'gone';
}

/**
 * Releases every attachment of this network missing from
 * cni.dev/valid-attachments, and gives each one's address back with an IPAM
 * DEL. An IPAM plugin that speaks 1.1 then gets the GC itself, with the same
 * list, as the spec asks (so it may free what we hold no record of). The DEL
 * stays even then: host-local speaks 1.1 since upstream 1.5 but its GC frees
 * nothing (seen with v1.6.0: GC answers 0, the address stays reserved).
 */
export function cmdGc(conf: NetConf, raw: Record<string, unknown>, env: CniEnv, host: HostContext): string[] {
  const valid = new Set((conf['cni.dev/valid-attachments'] ?? []).map((a) => `${a.containerID}\0${a.ifname}`));
  const gone: string[] = [];
  const problems: string[] = [];
  // A missing or broken IPAM plugin must not stop us releasing our own objects: its error comes last.
  let ipam: Ipam | null = null;
  let delegate = false;
  let ipamError: CniError | null = null;
  if (conf.ipam) {
    try {
      ipam = new Ipam(conf, env, raw);
      delegate = ipam.knows('GC');
    } catch (e) {
      ipam = null;
      ipamError = toCniError(e);
    }
  }
  for (const rec of attachmentsOf(host.stateDir, conf.name)) {
    const c = cniInfo(rec)!;
    if (valid.has(`${c.containerId}\0${c.ifname}`) || setupInFlight(rec)) continue;
    try {
      release(rec, host);
      if (ipam) ipam.del({ containerId: c.containerId, ifname: c.ifname, netns: c.netns });
      gone.push(`${c.containerId}/${c.ifname}`);
    } catch (e) {
      problems.push(`${c.containerId}/${c.ifname}: ${(e as Error).message}`);
    }
  }
  const ours = problems.length ? `GC could not release ${problems.length} attachment(s)` : null;
  if (ipam && delegate) {
    try { ipam.gc(); } catch (e) { ipamError = toCniError(e); }
  }
  if (ipamError) {
    // The IPAM plugin's error, code and all, with ours added to its details.
    if (!ours) throw ipamError;
    throw new CniError(ipamError.code, ipamError.message, [ipamError.details, `${ours}: ${problems.join('; ')}`].filter(Boolean).join('; '));
  }
  if (ours) throw new CniError(CniCode.HELPER_BASE + 10, ours, problems.join('; '));
  return gone;
}
