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
const FIELDS: Record<(typeof OPS)[number], string[]> = {
  'add-port': ['socket', 'client', 'mode', 'owner'],
  'remove-port': ['port', 'socket'],
  'set-mode': ['port', 'mode'],
  list: [],
  events: [],
  save: [],
};

function isScalar(v: unknown): v is RequestId {
  return v === null || ['string', 'number', 'boolean'].includes(typeof v);
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
  const o = v as Record<string, unknown>;
  const id = isScalar(o.id) ? o.id : undefined;
  const fail = (m: string): never => { throw new ControlError(m, id); };
  if (o.id !== undefined && !isScalar(o.id)) fail('"id" must be a string, number, boolean or null');
  const op = o.op;
  if (typeof op !== 'string' || !(OPS as readonly string[]).includes(op)) fail(`"op" must be one of ${OPS.join(', ')}`);
  const known = new Set(['op', 'id', ...FIELDS[op as (typeof OPS)[number]]]);
  for (const k of Object.keys(o)) if (!known.has(k)) fail(`unknown field "${k}" for ${String(op)}`);
  const withId = <T extends object>(r: T): T & { id?: RequestId } => (id === undefined ? r : { ...r, id });
  const mode = (): PortModeName | undefined => {
    if (o.mode === undefined) return undefined;
    if (typeof o.mode !== 'string' || !(MODE_NAMES as readonly string[]).includes(o.mode)) fail(`"mode" must be one of ${MODE_NAMES.join(', ')}`);
    return o.mode as PortModeName;
  };
  const portNo = (): number | undefined => {
    if (o.port === undefined) return undefined;
    if (typeof o.port !== 'number' || !Number.isSafeInteger(o.port) || o.port < 0) fail('"port" must be a port number');
    return o.port as number;
  };
  const socket = (): string | undefined => {
    if (o.socket === undefined) return undefined;
    if (typeof o.socket !== 'string' || o.socket === '' || o.socket.includes('\0')) fail('"socket" must be a non-empty path');
    if (Buffer.byteLength(o.socket as string) > 107) fail('"socket" is longer than a unix socket path may be (107 bytes)');
    return o.socket as string;
  };
  switch (op as (typeof OPS)[number]) {
    case 'add-port': {
      const s = socket();
      if (s === undefined) fail('add-port needs "socket"');
      if (o.client !== undefined && typeof o.client !== 'boolean') fail('"client" must be true or false');
      const m = mode();
      const own = o.owner === undefined ? undefined : parseOwner(o.owner, fail);
      return withId({ op: 'add-port', socket: s!, client: o.client === true, ...(m ? { mode: m } : {}), ...(own ? { owner: own } : {}) });
    }
    case 'remove-port': {
      const p = portNo();
      const s = socket();
      if ((p === undefined) === (s === undefined)) fail('remove-port needs exactly one of "port" and "socket"');
      return withId({ op: 'remove-port', ...(p !== undefined ? { port: p } : {}), ...(s !== undefined ? { socket: s } : {}) });
    }
    case 'set-mode': {
      const p = portNo();
      const m = mode();
      if (p === undefined || m === undefined) fail('set-mode needs "port" and "mode"');
      return withId({ op: 'set-mode', port: p!, mode: m! });
    }
    case 'list': return withId({ op: 'list' });
    case 'events': return withId({ op: 'events' });
    case 'save': return withId({ op: 'save' });
  }
  return fail('unreachable');
}

const isId = (v: unknown): v is number => typeof v === 'number' && Number.isInteger(v) && v >= 0 && v <= 0xfffffffe;

function parseOwner(v: unknown, fail: (m: string) => never): Owner {
  if (typeof v !== 'object' || v === null || Array.isArray(v)) return fail('"owner" must be {"uid":N,"gid":N}');
  const o = v as Record<string, unknown>;
  for (const k of Object.keys(o)) if (k !== 'uid' && k !== 'gid') fail(`unknown field "${k}" in "owner"`);
  if (!isId(o.uid) || !isId(o.gid)) fail('"owner" needs "uid" and "gid", integers from 0 to 4294967294');
  return { uid: o.uid as number, gid: o.gid as number };
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
