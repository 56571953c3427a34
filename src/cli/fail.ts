import type { Command } from '@oclif/core';
import { describeError } from '../errors.js';

/**
 * The one place a command turns an error into output and an exit status: one
 * line on stderr for people, and with --json a JSON error on stdout for
 * management software, with the same documented exit code.
 */
export function fail(cmd: Command & { jsonEnabled(): boolean }, e: unknown): never {
  const { exitCode, line } = describeError(e);
  if (cmd.jsonEnabled()) process.stdout.write(JSON.stringify({ error: { message: line, exitCode } }) + '\n');
  process.stderr.write(`qemu-net-helper: ${line}\n`);
  process.exit(exitCode);
}
