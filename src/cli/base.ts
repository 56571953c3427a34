// The base of every command: whatever a command throws, oclif's parse errors
// included, leaves through fail() (one line, documented exit code, JSON error).
import { Command } from '@oclif/core';
import { fail } from './fail.js';
import { fromOclif, oclifExit } from './usage.js';

export abstract class QnhCommand extends Command {
  override async catch(err: Error & { exitCode?: number }): Promise<never> {
    const code = oclifExit(err);
    if (code !== null) process.exit(code);
    fail(this, fromOclif(err, this.id?.replace(/:/g, ' ')));
  }
}
