// The control socket's protocol, pure: JSON lines in, JSON lines out. One
// request object per line; every request gets exactly one reply line, in
// order: {"ok":true,...} or {"ok":false,"error":"..."}; a request's "id"
// (any JSON scalar) is echoed in its reply. After {"op":"events"} the
// connection also carries event lines ({"event":...}, see events.ts).
//
// Requests:
//   {"op":"add-port","socket":PATH,"client":false,"mode":"veb","owner":{"uid":N,"gid":N}}
//                                                                 -> {"ok":true,"port":N,"socket":PATH,"owner":{...}}
//   {"op":"remove-port","port":N} | {"op":"remove-port","socket":PATH} -> {"ok":true,"port":N,"socket":PATH}
//   {"op":"set-mode","port":N,"mode":"vepa"}                      -> {"ok":true,"port":N,"mode":"vepa"}
//   {"op":"list"}   -> {"ok":true,"ports":[{...,"owner":{"uid":N,"gid":N}}],"uplink":{"port":"uplink",...}|null,"macs":[...]}
//                      (the uplink is "port":"uplink" in list, macs, events and stats alike;
//                      "owner" is optional; who may name one, and act on which port, is server.ts's business)
//   {"op":"events"} -> {"ok":true}, then every event as it happens
//   {"op":"save"}   -> {"ok":true,"file":PATH,"ports":N}: the switch writes its configuration file
import { z } from 'zod';
import { MODE_NAMES, type PortModeName } from '../switch/forwarding.js';
import type { Owner } from '../tenancy.js';

/** Longest request line accepted: a request is a few hundred bytes; more is a broken or hostile client. */
export const MAX_LINE = 16 * 1024;

export type RequestId = string | number | boolean | null;

export type ControlRequest =
  | { op: 'add-port'; socket: string; client: boolean; mode?: PortModeName; owner?: Owner; id?: RequestId }
  | { op: 'remove-port'; port?: number; socket?: string; id?: RequestId }
  | { op: 'set-mode'; port: number; mode: PortModeName; id?: RequestId }
  | { op: 'list'; id?: RequestId }
  | { op: 'events'; id?: RequestId }
  | { op: 'save'; id?: RequestId };

export class ControlError extends Error {
  constructor(message: string, readonly id?: RequestId) { super(message); }
}

const OPS = ['add-port', 'remove-port', 'set-mode', 'list', 'events', 'save'] as const;
type Op = (typeof OPS)[number];

// Each schema carries its own one-line message, so a refusal reads the same
// whichever check failed; `needs` is the message for a required field left out.
const says = (bad: string, needs = bad) => ({ error: (iss: { input?: unknown }) => (iss.input === undefined ? needs : bad) });
const requestId = z.union([z.string(), z.number(), z.boolean(), z.null()], says('"id" must be a string, number, boolean or null'));
const modeName = (needs?: string) => z.enum(MODE_NAMES, says(`"mode" must be one of ${MODE_NAMES.join(', ')}`, needs));
const portNo = (needs?: string) => z.number(says('"port" must be a port number', needs)).int('"port" must be a port number').min(0, '"port" must be a port number');
const NOT_PATH = '"socket" must be a non-empty path';
const socketPath = (needs?: string) => z.string(says(NOT_PATH, needs)).min(1, NOT_PATH)
  .refine((t) => !t.includes('\0'), NOT_PATH)
  .refine((t) => Buffer.byteLength(t) <= 107, '"socket" is longer than a unix socket path may be (107 bytes)');
const OWNER_IDS = '"owner" needs "uid" and "gid", integers from 0 to 4294967294';
const ownerId = z.number(OWNER_IDS).int(OWNER_IDS).min(0, OWNER_IDS).max(0xfffffffe, OWNER_IDS);
const owner = z.strictObject({ uid: ownerId, gid: ownerId }, '"owner" must be {"uid":N,"gid":N}');

/** What every request has, checked first: a JSON object with a known "op" and a scalar "id". */
const envelope = z.looseObject({ op: z.enum(OPS, `"op" must be one of ${OPS.join(', ')}`), id: requestId.optional() });

const base = <O extends Op>(op: O) => ({ op: z.literal(op), id: requestId.optional() });
const SCHEMAS = {
  'add-port': z.strictObject({
    ...base('add-port'), socket: socketPath('add-port needs "socket"'), client: z.boolean('"client" must be true or false').default(false),
    mode: modeName().optional(), owner: owner.optional(),
  }),
  'remove-port': z.strictObject({ ...base('remove-port'), port: portNo().optional(), socket: socketPath().optional() })
    .refine((r) => (r.port === undefined) !== (r.socket === undefined), 'remove-port needs exactly one of "port" and "socket"'),
  'set-mode': z.strictObject({ ...base('set-mode'), port: portNo('set-mode needs "port" and "mode"'), mode: modeName('set-mode needs "port" and "mode"') }),
  list: z.strictObject(base('list')),
  events: z.strictObject(base('events')),
  save: z.strictObject(base('save')),
} satisfies Record<Op, z.ZodType>;

/** The first problem as one line; an unknown field outranks the rest (it usually explains them). */
function firstProblem(error: z.ZodError, op: Op): string {
  const issues = [...error.issues].sort((a, b) => Number(b.code === 'unrecognized_keys') - Number(a.code === 'unrecognized_keys'));
  const i = issues[0]!;
  if (i.code === 'unrecognized_keys') return i.path.length ? `unknown field "${i.keys[0]}" in "${String(i.path[0])}"` : `unknown field "${i.keys[0]}" for ${op}`;
  return i.message;
}

/** One request line -> a typed request; ControlError (with the id when readable) otherwise. */
export function parseRequest(line: string): ControlRequest {
  let v: unknown;
  try {
    v = JSON.parse(line);
  } catch {
    throw new ControlError('request is not valid JSON');
  }
  if (typeof v !== 'object' || v === null || Array.isArray(v)) throw new ControlError('request must be a JSON object');
  const rawId = (v as { id?: unknown }).id;
  const id = requestId.safeParse(rawId).success ? rawId as RequestId : undefined;
  const env = envelope.safeParse(v);
  if (!env.success) throw new ControlError(env.error.issues.find((i) => i.path[0] === 'id')?.message ?? env.error.issues[0]!.message, id);
  const r = SCHEMAS[env.data.op].safeParse(v);
  if (!r.success) throw new ControlError(firstProblem(r.error, env.data.op), id);
  return r.data as ControlRequest;
}

/** A reply or event object as one line. */
export function encodeLine(obj: object): string {
  return `${JSON.stringify(obj)}\n`;
}

export function okReply(id: RequestId | undefined, fields: object = {}): string {
  return encodeLine({ ok: true, ...(id !== undefined ? { id } : {}), ...fields });
}

export function errorReply(id: RequestId | undefined, message: string): string {
  return encodeLine({ ok: false, ...(id !== undefined ? { id } : {}), error: message });
}

/**
 * Splits a byte stream into lines (UTF-8 decoded per line, so a character
 * cut across chunks survives). A line longer than `max` is an error: the
 * caller replies and closes instead of buffering without end.
 */
export class LineSplitter {
  private parts: Buffer[] = [];
  private pending = 0;
  constructor(private readonly max = MAX_LINE) {}

  push(chunk: Buffer): string[] {
    const lines: string[] = [];
    let start = 0;
    for (let i = chunk.indexOf(10); i >= 0; i = chunk.indexOf(10, start)) {
      this.take(chunk.subarray(start, i));
      const line = Buffer.concat(this.parts).toString('utf8').replace(/\r$/, '');
      this.parts = [];
      this.pending = 0;
      if (line.trim() !== '') lines.push(line);
      start = i + 1;
    }
    this.take(chunk.subarray(start));
    return lines;
  }

  private take(b: Buffer): void {
    if (b.length === 0) return;
    this.pending += b.length;
    if (this.pending > this.max) throw new ControlError(`request line longer than ${this.max} bytes`);
    this.parts.push(b);
  }
}
