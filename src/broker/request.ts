// The broker's side of the wire: one request line -> a checked BrokerRequest,
// as zod schemas. Kept apart from protocol.ts so that the client (on QEMU's
// start-up path) never loads zod; the broker has it loaded anyway. Everything
// a hostile client may send is refused here, with a one-line reason, before
// the broker acts on it.
import { z } from 'zod';
import { BROKER_PROTOCOL_VERSION, BrokerProtocolError, MAX_ARGS, MAX_ARG_BYTES, MAX_REQUEST_BYTES, type BrokerRequest } from './protocol.js';

const argList = (message: string) => z.array(z.string(message).refine((s) => Buffer.byteLength(s) <= MAX_ARG_BYTES, message), message).max(MAX_ARGS, message);
const text = (k: string) => z.string(`option '${k}' must be a string`).max(MAX_ARG_BYTES, `option '${k}' must be a string`);

/** `up`'s options: exactly UpOptions' fields (own properties only: '__proto__' is an unknown option). */
const upOptions = z.strictObject({
  mode: text('mode').optional(),
  dev: text('dev').optional(),
  mac: text('mac').optional(),
  mtu: z.number("option 'mtu' must be a number").int("option 'mtu' must be a number").optional(),
  profile: text('profile').optional(),
  vfPool: argList("option 'vfPool' must be a list of strings").optional(),
  id: text('id').optional(),
  transport: z.enum(['tap', 'macvtap', 'vhost-user'], "option 'transport' must be tap, macvtap or vhost-user").optional(),
  vnetHdr: z.boolean("option 'vnetHdr' must be a boolean").optional(),
}, 'options must be an object');

const v = z.literal(BROKER_PROTOCOL_VERSION);
const SCHEMAS = {
  helper: z.strictObject({ v, op: z.literal('helper'), argv: argList(`argv must be a list of at most ${MAX_ARGS} strings`) }),
  up: z.strictObject({ v, op: z.literal('up'), options: z.preprocess((o) => o ?? {}, upOptions) }),
  down: z.strictObject({ v, op: z.literal('down'), id: z.string('id must be a string').max(128, 'id must be a string') }),
  list: z.strictObject({ v, op: z.literal('list') }),
  gc: z.strictObject({ v, op: z.literal('gc') }),
} as const;

/** The first problem as one line; an unknown field or option outranks the rest. */
function firstProblem(error: z.ZodError, op: string): string {
  const i = error.issues.find((x) => x.code === 'unrecognized_keys') ?? error.issues[0]!;
  if (i.code !== 'unrecognized_keys') return i.message;
  return i.path[0] === 'options' ? `unknown option '${i.keys[0]}'` : `unknown field '${i.keys[0]}' in a ${op} request`;
}

/** Parses and checks one request line (without its newline). */
export function decodeRequest(line: string): BrokerRequest {
  if (Buffer.byteLength(line) > MAX_REQUEST_BYTES) throw new BrokerProtocolError(`request longer than ${MAX_REQUEST_BYTES} bytes`);
  let raw: unknown;
  try {
    raw = JSON.parse(line);
  } catch {
    throw new BrokerProtocolError('request is not JSON');
  }
  if (typeof raw !== 'object' || raw === null || Array.isArray(raw)) throw new BrokerProtocolError('request must be a JSON object');
  const r = raw as Record<string, unknown>;
  if (r.v !== BROKER_PROTOCOL_VERSION) throw new BrokerProtocolError(`unsupported protocol version ${JSON.stringify(r.v)} (this broker speaks ${BROKER_PROTOCOL_VERSION})`);
  const op = typeof r.op === 'string' && Object.hasOwn(SCHEMAS, r.op) ? r.op as keyof typeof SCHEMAS : null;
  if (!op) throw new BrokerProtocolError(`unknown op ${JSON.stringify(r.op)}`);
  const parsed = SCHEMAS[op].safeParse(r);
  if (!parsed.success) throw new BrokerProtocolError(firstProblem(parsed.error, op));
  return parsed.data as BrokerRequest;
}
