// Durable records of endpoints whose pieces outlive the process that made
// them (macvtap links, routes, NAT networks, VF claims, persistent taps):
// versioned JSON, one file per endpoint, replaced atomically. `down`, the
// watcher and `gc` release an endpoint from its record alone.
import { existsSync, readdirSync } from 'node:fs';
import { randomBytes } from 'node:crypto';
import { join } from 'node:path';
import type { OwnedBy } from './owned.js';
import { ensureDir, readFileOrNull, removeFileDurable, writeFileAtomic } from './atomic-file.js';
import { z } from 'zod';
import { ownerRefSchema, ownerStatus, type OwnerRef } from './owner.js';
import { netnsRefSchema, type NetnsRef } from './netns-ref.js';

export const ENDPOINT_VERSION = 1;

export type { OwnedBy } from './owned.js';

export interface EndpointRecord {
  version: number;
  id: string;
  createdAt: string;
  /** The process whose exit ends the endpoint (QEMU); null: lives until `down`. */
  owner: OwnerRef | null;
  /** Who asked for it (a broker's client sees and removes only its own); absent in records of older versions: root's. */
  uid?: number;
  /**
   * What ends it: 'owner' (the process in `owner` exits), 'manual' (`down`),
   * 'fd' (QEMU could not be identified: nobody holds its fd any more).
   * Absent in older records: 'owner' when there is one, else 'manual'.
   */
  lifetime?: 'owner' | 'manual' | 'fd';
  /** The watcher process that releases it when the owner exits, if one was started. */
  watcher: OwnerRef | null;
  mode: string;
  kernel: string;
  transport: string;
  ifname: string;
  mac: string | null;
  mtu: number;
  devicePath: string | null;
  owned: OwnedBy[];
  /**
   * The network namespace the objects were made in: down/gc act there (or
   * refuse when it is gone). Absent in older records: wherever `down` runs.
   */
  netns?: NetnsRef;
  /** Extra facts for list/--json. */
  info: Record<string, unknown>;
}

export function endpointDir(stateDir: string): string { return join(stateDir, 'endpoints'); }

export function newEndpointId(): string {
  return `ep-${Date.now().toString(36)}-${randomBytes(3).toString('hex')}`;
}

const ID_RE = /^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$/;
export function validEndpointId(id: string): boolean { return ID_RE.test(id); }

function file(stateDir: string, id: string): string {
  if (!validEndpointId(id)) throw new Error(`invalid endpoint id '${id}'`);
  return join(endpointDir(stateDir), `${id}.json`);
}

export function saveEndpoint(stateDir: string, rec: EndpointRecord): void {
  ensureDir(endpointDir(stateDir));
  writeFileAtomic(file(stateDir, rec.id), JSON.stringify(rec, null, 2) + '\n');
}

/**
 * What a record must hold for down/gc/the watcher to act on it. Loose on
 * purpose: fields a later release adds are kept, and the facts in `owned`
 * are checked by the step that releases each one.
 */
const endpointRecordSchema = z.looseObject({
  version: z.literal(ENDPOINT_VERSION),
  id: z.string(),
  owned: z.array(z.unknown()),
  owner: ownerRefSchema.nullable(),
  watcher: ownerRefSchema.nullable(),
  uid: z.number().int().min(0).optional(),
  lifetime: z.enum(['owner', 'manual', 'fd']).optional(),
  netns: netnsRefSchema.optional(),
});

/** Why `v` is not an endpoint record ('owner.pid: ...'), or null when it is one. */
export function endpointRecordProblem(v: unknown): string | null {
  const r = endpointRecordSchema.safeParse(v);
  if (r.success) return null;
  const i = r.error.issues[0]!;
  return `${i.path.length ? `${i.path.join('.')}: ` : ''}${i.message}`;
}

export function isEndpointRecord(v: unknown): v is EndpointRecord { return endpointRecordProblem(v) === null; }

export type LoadedEndpoint = { record: EndpointRecord; file: string } | { corrupt: string; file: string; id: string };

export function loadEndpoint(stateDir: string, id: string): EndpointRecord | null {
  const text = readFileOrNull(file(stateDir, id));
  if (text === null) return null;
  let v: unknown;
  // Records are written only by us, atomically: one that does not parse is damage (internal error, exit 1).
  try { v = JSON.parse(text); } catch (e) { throw new Error(`${file(stateDir, id)} is not valid JSON (${(e as Error).message.split('\n')[0]}); move it away to release by hand`); }
  const problem = endpointRecordProblem(v);
  if (problem !== null) throw new Error(`${file(stateDir, id)} is not an endpoint record of version ${ENDPOINT_VERSION} (${problem})`);
  return v as EndpointRecord;
}

export function listEndpoints(stateDir: string): LoadedEndpoint[] {
  const dir = endpointDir(stateDir);
  if (!existsSync(dir)) return [];
  const out: LoadedEndpoint[] = [];
  for (const f of readdirSync(dir).filter((n) => n.endsWith('.json')).sort()) {
    const path = join(dir, f);
    const id = f.slice(0, -5);
    try {
      const v = JSON.parse(readFileOrNull(path) ?? 'null') as unknown;
      const problem = endpointRecordProblem(v);
      if (problem === null) out.push({ record: v as EndpointRecord, file: path });
      else out.push({ corrupt: `not an endpoint record (${problem})`, file: path, id });
    } catch (e) {
      out.push({ corrupt: (e as Error).message, file: path, id });
    }
  }
  return out;
}

export function removeEndpoint(stateDir: string, id: string): boolean {
  return removeFileDurable(file(stateDir, id));
}

// Tombstones of released endpoints (<stateDir>/released/ID: who owned it,
// when), so that `down` of an id released before stays an idempotent success
// while a mistyped id is reported as unknown. The state directory is a tmpfs
// (/run): they last until reboot; gc drops those older than TOMBSTONE_DAYS.
const TOMBSTONE_DAYS = 7;
export interface Tombstone { uid: number; releasedAt: string }
const tombstoneSchema = z.looseObject({ uid: z.number().int(), releasedAt: z.string() });
function releasedDir(stateDir: string): string { return join(stateDir, 'released'); }

export function noteReleased(stateDir: string, rec: EndpointRecord): void {
  ensureDir(releasedDir(stateDir));
  writeFileAtomic(join(releasedDir(stateDir), rec.id), JSON.stringify({ uid: rec.uid ?? 0, releasedAt: new Date().toISOString() }) + '\n');
}

export function releasedTombstone(stateDir: string, id: string): Tombstone | null {
  if (!validEndpointId(id)) return null;
  try {
    const t = tombstoneSchema.safeParse(JSON.parse(readFileOrNull(join(releasedDir(stateDir), id)) ?? 'null'));
    return t.success ? t.data : null;
  } catch {
    return null;
  }
}

/** Drops tombstones older than TOMBSTONE_DAYS; returns how many. */
export function pruneTombstones(stateDir: string, now = Date.now()): number {
  const dir = releasedDir(stateDir);
  if (!existsSync(dir)) return 0;
  let n = 0;
  for (const id of readdirSync(dir)) {
    const t = releasedTombstone(stateDir, id);
    if (t && now - Date.parse(t.releasedAt) < TOMBSTONE_DAYS * 86_400_000) continue;
    if (validEndpointId(id) || id.startsWith('.')) { removeFileDurable(join(dir, id)); n++; }
  }
  return n;
}

export function lifetimeOf(r: EndpointRecord): 'owner' | 'manual' | 'fd' {
  return r.lifetime ?? (r.owner ? 'owner' : 'manual');
}

/** 'alive' | 'gone' | 'unknown' for the owner; manual endpoints are always alive, ownerless ones unknown. */
export function endpointOwnerStatus(r: EndpointRecord): 'alive' | 'gone' | 'unknown' {
  if (r.owner) return ownerStatus(r.owner);
  return lifetimeOf(r) === 'manual' ? 'alive' : 'unknown';
}
