// How a command fails: one stderr line, the documented exit code, and the JSON error with --json.
import type { Command } from '@oclif/core';
import { describeError } from '../errors.js';

/** --json given before any `--` (what oclif's jsonEnabled() checks, for every command). */
export function jsonAsked(argv: readonly string[]): boolean {
  const end = argv.indexOf('--');
  const j = argv.indexOf('--json');
  return j !== -1 && (end === -1 || j < end);
}

/**
 * The one place a command turns an error into output and an exit status: one
 * line on stderr for people, and with --json a JSON error on stdout for
 * management software, with the same documented exit code. A command without
 * --json support given --json fails on that flag, and says so in JSON too.
 */
export function fail(cmd: Command & { jsonEnabled(): boolean }, e: unknown): never {
  const { exitCode, line } = describeError(e);
  if (cmd.jsonEnabled() || jsonAsked(cmd.argv)) process.stdout.write(JSON.stringify({ error: { message: line, exitCode } }) + '\n');
  process.stderr.write(`qemu-net-helper: ${line}\n`);
  process.exit(exitCode);
}
