// The broker's wire format: one JSON line each way on a unix stream socket.
// The client sends a request and waits; the broker answers and closes. Pure
// and dependency-free (no zod): the client side runs on QEMU's start-up path.
// The broker checks requests in request.ts (zod), refusing anything odd a
// hostile client sends before acting on it. QEMU's socket is not in the message: the broker takes it out
// of the client with pidfd_getfd, by the fd number the helper flags name.

import type { UpOptions } from '../setup/up.js';

export const BROKER_PROTOCOL_VERSION = 1;
/** Largest request line accepted: a helper's argv is a few hundred bytes. */
export const MAX_REQUEST_BYTES = 16 * 1024;
export const MAX_ARGS = 64;
export const MAX_ARG_BYTES = 1024;

/** `up`'s options travel as they are (checked field by field in request.ts). */
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
