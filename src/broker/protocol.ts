// The broker's wire format: one JSON line each way on a unix stream socket.
// The client sends a request and waits; the broker answers and closes. Pure
// and dependency-free (no zod): the client side runs on QEMU's start-up path,
// and the broker side must refuse anything odd a hostile client sends before
// acting on it. QEMU's socket is not in the message: the broker takes it out
// of the client with pidfd_getfd, by the fd number the helper flags name.

import type { UpOptions } from '../lifecycle/up.js';

export const BROKER_PROTOCOL_VERSION = 1;
/** Largest request line accepted: a helper's argv is a few hundred bytes. */
export const MAX_REQUEST_BYTES = 16 * 1024;
const MAX_ARGS = 64;
const MAX_ARG_BYTES = 1024;

/** `up`'s options travel as they are (checked field by field below). */
export type UpOptionsWire = UpOptions;

export type BrokerRequest =
  | { v: 1; op: 'helper'; argv: string[] }
  | { v: 1; op: 'up'; options: UpOptionsWire }
  | { v: 1; op: 'down'; id: string }
  | { v: 1; op: 'list' }
  | { v: 1; op: 'gc' };

export type BrokerReply =
  | { v: 1; ok: true; exit: 0; result?: unknown; lines?: string[] }
  | { v: 1; ok: false; exit: number; error: string; lines?: string[] };

export class BrokerProtocolError extends Error {}

function isStringArray(v: unknown, max: number): v is string[] {
  return Array.isArray(v) && v.length <= max && v.every((s) => typeof s === 'string' && Buffer.byteLength(s) <= MAX_ARG_BYTES);
}

const UP_FIELDS: Record<keyof UpOptionsWire, 'string' | 'number' | 'strings' | 'boolean'> = {
  mode: 'string', dev: 'string', mac: 'string', mtu: 'number', profile: 'string', vfPool: 'strings', id: 'string', transport: 'string', vnetHdr: 'boolean',
};

function upOptions(v: unknown): UpOptionsWire {
  if (typeof v !== 'object' || v === null || Array.isArray(v)) throw new BrokerProtocolError('options must be an object');
  const out: Record<string, unknown> = {};
  for (const [k, val] of Object.entries(v)) {
    // Own properties only: '__proto__', 'toString' and the like are unknown options, not Object.prototype's.
    const kind = Object.hasOwn(UP_FIELDS, k) ? UP_FIELDS[k as keyof UpOptionsWire] : undefined;
    if (!kind) throw new BrokerProtocolError(`unknown option '${k}'`);
    const ok = kind === 'string' ? typeof val === 'string' && val.length <= MAX_ARG_BYTES
      : kind === 'number' ? Number.isSafeInteger(val)
        : kind === 'boolean' ? typeof val === 'boolean'
          : isStringArray(val, MAX_ARGS);
    if (!ok) throw new BrokerProtocolError(`option '${k}' must be a ${kind === 'strings' ? 'list of strings' : kind}`);
    out[k] = val;
  }
  if (out.transport !== undefined && !['tap', 'macvtap', 'vhost-user'].includes(out.transport as string)) throw new BrokerProtocolError('option \'transport\' must be tap, macvtap or vhost-user');
  return out as UpOptionsWire;
}

/** Parses and checks one request line (without its newline). */
export function decodeRequest(line: string): BrokerRequest {
  if (Buffer.byteLength(line) > MAX_REQUEST_BYTES) throw new BrokerProtocolError(`request longer than ${MAX_REQUEST_BYTES} bytes`);
  let v: unknown;
  try {
    v = JSON.parse(line);
  } catch {
    throw new BrokerProtocolError('request is not JSON');
  }
  if (typeof v !== 'object' || v === null || Array.isArray(v)) throw new BrokerProtocolError('request must be a JSON object');
  const r = v as Record<string, unknown>;
  if (r.v !== BROKER_PROTOCOL_VERSION) throw new BrokerProtocolError(`unsupported protocol version ${JSON.stringify(r.v)} (this broker speaks ${BROKER_PROTOCOL_VERSION})`);
  const keys = (allowed: string[]): void => {
    const extra = Object.keys(r).filter((k) => !allowed.includes(k));
    if (extra.length) throw new BrokerProtocolError(`unknown field '${extra[0]}' in a ${String(r.op)} request`);
  };
  switch (r.op) {
    case 'helper':
      keys(['v', 'op', 'argv']);
      if (!isStringArray(r.argv, MAX_ARGS)) throw new BrokerProtocolError(`argv must be a list of at most ${MAX_ARGS} strings`);
      return { v: 1, op: 'helper', argv: r.argv };
    case 'up':
      keys(['v', 'op', 'options']);
      return { v: 1, op: 'up', options: upOptions(r.options ?? {}) };
    case 'down':
      keys(['v', 'op', 'id']);
      if (typeof r.id !== 'string' || r.id.length > 128) throw new BrokerProtocolError('id must be a string');
      return { v: 1, op: 'down', id: r.id };
    case 'list':
    case 'gc':
      keys(['v', 'op']);
      return { v: 1, op: r.op };
    default:
      throw new BrokerProtocolError(`unknown op ${JSON.stringify(r.op)}`);
  }
}

export function encodeRequest(r: BrokerRequest): string {
  return JSON.stringify(r) + '\n';
}

export function encodeReply(r: BrokerReply): string {
  return JSON.stringify(r) + '\n';
}

/** Parses the broker's answer; anything malformed is an error the client reports as such. */
export function decodeReply(line: string): BrokerReply {
  let v: unknown;
  try {
    v = JSON.parse(line);
  } catch {
    throw new BrokerProtocolError('the broker answered something that is not JSON');
  }
  const r = v as Record<string, unknown>;
  if (typeof v !== 'object' || v === null || r.v !== BROKER_PROTOCOL_VERSION || typeof r.ok !== 'boolean' || !Number.isInteger(r.exit)) {
    throw new BrokerProtocolError('the broker answered an unexpected message');
  }
  if (r.lines !== undefined && !isStringArray(r.lines, 1000)) throw new BrokerProtocolError('the broker answered malformed lines');
  if (!r.ok && typeof r.error !== 'string') throw new BrokerProtocolError('the broker answered an error without a message');
  return r as BrokerReply;
}
