// The oclif CLI's entry (bin dispatches the helper and CNI forms before this):
// `help [CMD]` and leading global flags are rewritten to what oclif knows, and
// failures before a command runs (unknown command) leave in our error style.
import { dirname, resolve } from 'node:path';
import { Config, run, flush } from '@oclif/core';
import { describeError, UsageError } from '../errors.js';
import { jsonAsked } from './fail.js';
import { fromOclif, oclifExit } from './usage.js';

/** Flags valid before the command word (`qemu-net-helper --json list`). */
const LEADING = new Set(['--json']);

/** argv as oclif expects it: `help [CMD...]` -> `CMD... --help`; `--json CMD` -> `CMD --json`. */
function normalizeArgv(argv: readonly string[]): string[] {
  const a = [...argv];
  if (a[0] === 'help') return [...a.slice(1), '--help'];
  const lead: string[] = [];
  while (a.length && LEADING.has(a[0]!)) lead.push(a.shift()!);
  if (!lead.length || !a.length) return [...a, ...lead];
  // After the command's words (topic and command: `vhost-user serve`), before its own flags.
  let i = 0;
  while (i < a.length && !a[i]!.startsWith('-')) i++;
  return [...a.slice(0, i), ...lead, ...a.slice(i)];
}

/** `bin` is the bin script's path; the package root is its parent directory. */
/**
 * oclif reads `list extra` as a command "list extra" that does not exist; a
 * known command followed by a stray word is an unexpected argument.
 */
async function strayArgument(e: unknown, opts: { root: string; userPlugins: false }): Promise<unknown> {
  const m = /^command (\S+) not found/i.exec((e as { message?: string }).message ?? '');
  if (!m) return e;
  const words = m[1]!.split(':');
  const config = await Config.load(opts);
  for (let n = words.length - 1; n > 0; n--) {
    if (!config.findCommand(words.slice(0, n).join(':'))) continue;
    const cmd = words.slice(0, n).join(' ');
    return new UsageError(`unexpected argument '${words[n]}' for '${cmd}'`, `run 'qemu-net-helper ${cmd} --help' for its arguments`);
  }
  return e;
}

export async function main(argv: readonly string[], bin: string): Promise<void> {
  const args = normalizeArgv(argv);
  // No user plugins: a CLI run as root must not load code from a user's data directory
  // (and reading another HOME's would print a warning beside our one line).
  const opts = { root: resolve(dirname(bin), '..'), userPlugins: false as const };
  try {
    if (args.length > 0 && args.every((a) => LEADING.has(a))) throw new UsageError(`no command given with ${args.join(' ')}`, "run 'qemu-net-helper --help' for the commands");
    await run(args, opts);
    await flush();
  } catch (e) {
    const code = oclifExit(e);
    if (code !== null) process.exit(code);
    const words = args.filter((x) => !x.startsWith('-')).slice(0, 2).join(' ');
    const { exitCode, line } = describeError(fromOclif(await strayArgument(e, opts), words || undefined));
    if (jsonAsked(argv)) process.stdout.write(JSON.stringify({ error: { message: line, exitCode } }) + '\n');
    process.stderr.write(`qemu-net-helper: ${line}\n`);
    process.exit(exitCode);
  }
}
