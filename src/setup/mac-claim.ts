// Whether a guest MAC may be given to a new endpoint: not while another live
// endpoint has it (two guests with one MAC break both), and, for a non-root
// caller, not when a profile pins it, unless the request uses that profile —
// else anyone allowed some mode could take a profile's MAC first and make
// the QEMU the profile is for be refused. A holder whose owner is gone was
// released just before (lifecycle/reap.ts), so a dead guest's record blocks nobody.
import { readdirSync } from 'node:fs';
import { join } from 'node:path';
import type { Caller } from '../access/caller.js';
import { AccessDeniedError } from '../errors.js';
import type { HostContext } from '../host/context.js';
import { formatMac, parseMac } from '../net/mac.js';
import { loadProfile } from '../policy/load.js';
import { listEndpoints } from '../state/endpoints.js';

/** Profiles (by name) whose `mac` is `text`; invalid profiles are skipped (they fail where they are used). */
function profilesPinning(config: string, text: string): string[] {
  let names: string[];
  try { names = readdirSync(join(config, 'profiles')); } catch { return []; }
  const out: string[] = [];
  for (const f of names) {
    if (!f.endsWith('.json')) continue;
    const name = f.slice(0, -'.json'.length);
    try {
      const p = loadProfile(config, name);
      const pinned = p?.mac ? parseMac(p.mac) : null;
      if (pinned && formatMac(pinned) === text) out.push(name);
    } catch { /* invalid profile */ }
  }
  return out;
}

export function checkMacFree(mac: Buffer | undefined, o: { host: HostContext; config: string; caller: Caller; profile: string | null }): void {
  if (!mac) return;
  const text = formatMac(mac);
  if (!o.caller.isRoot) {
    const pinned = profilesPinning(o.config, text).filter((n) => n !== o.profile);
    if (pinned.length) throw new AccessDeniedError(`access denied: MAC ${text} is reserved by profile '${pinned[0]}'`, `use that profile (--profile=${pinned[0]}) or another MAC`);
  }
  for (const e of listEndpoints(o.host.stateDir)) {
    if (!('record' in e) || e.record.mac !== text) continue;
    throw new AccessDeniedError(`access denied: MAC ${text} is in use by endpoint ${e.record.id}`, 'give each guest NIC its own MAC');
  }
}
