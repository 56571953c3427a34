// oclif's own failures (parse errors, unknown commands) in our one error style:
// a UsageError (exit 2) with one line, instead of oclif's boxed message and help.
import { ExitCode, HelperError, UsageError } from '../errors.js';

interface OclifLike { message?: unknown; oclif?: { exit?: unknown }; code?: unknown; name?: unknown }

/** An oclif `this.exit(N)` (not a failure: the exit status a command chose), or null. */
export function oclifExit(e: unknown): number | null {
  const o = e as OclifLike;
  if (typeof o === 'object' && o !== null && o.code === 'EEXIT' && typeof o.oclif?.exit === 'number') return o.oclif.exit;
  return null;
}

/** One line from oclif's multi-line message, without its "see more help" footer. */
function oneLine(msg: string): string {
  const lines = msg.split('\n').map((l) => l.trim()).filter((l) => l && !/^See more help with --help$/i.test(l));
  const s = lines.join(' ').replace(/\s+/g, ' ').replace(/:\s*$/, '');
  return s.charAt(0).toLowerCase() + s.slice(1);
}

/** oclif's wording in ours: `unknown flag --x`, `missing argument ID (what it is)`, `unexpected argument 'x'`. */
function reword(line: string): string {
  const missing = /^missing \d+ required args?: (\S+)\s+(.+)$/.exec(line);
  if (missing) return `missing argument ${missing[1]!.toUpperCase()} (${missing[2]})`;
  return line
    .replace(/^nonexistent flags?:?\s*/i, 'unknown flag ')
    .replace(/^unexpected argument:\s*(\S+)$/i, "unexpected argument '$1'");
}

/**
 * Our error for anything oclif threw: its parse errors (unknown flag, missing
 * or bad value, missing argument, unknown command) are usage errors; our own
 * errors pass through; anything else stays as it is (describeError reports it).
 */
export function fromOclif(e: unknown, command: string | undefined): unknown {
  if (e instanceof HelperError) return e;
  const o = e as OclifLike;
  if (typeof o !== 'object' || o === null || typeof o.message !== 'string') return e;
  const help = `run 'qemu-net-helper ${command ? `${command} ` : ''}--help' for the accepted ${command ? 'flags' : 'commands'}`;
  const notFound = /^command (\S+) not found/i.exec(o.message);
  if (notFound) return new UsageError(`unknown command '${notFound[1]!.replace(/:/g, ' ')}'`, "run 'qemu-net-helper --help' for the commands");
  // Every parser error carries oclif.exit 2 (the usage status), or is one of its named classes.
  const parseError = o.oclif?.exit === ExitCode.USAGE || (typeof o.name === 'string' && /Flag|Arg|Parse/.test(o.name)) || 'parse' in o;
  if (parseError) return new UsageError(reword(oneLine(o.message)), help);
  return e;
}
