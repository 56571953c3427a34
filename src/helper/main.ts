// Entry of the helper: QEMU runs us once per NIC and waits, so the plain
// bridge case loads only what it needs (no oclif, no zod) and writes nothing
// to stdout, which may be QEMU's monitor. Policy flags, or a profile named like
// --br, load the policy path through `loadFull`, so that the bundled fast path
// and the unbundled library can each supply it their own way.
import { existsSync } from 'node:fs';
import { describeError, ExitCode } from '../errors.js';
import { HELPER_USAGE, needsPolicy, parseHelperArgs, type HelperArgs } from './args.js';
import { runHelper } from './run.js';
import { callerIsRoot, configPaths } from '../host/context.js';

export type FullHelper = { runPolicyHelper: (a: HelperArgs, env?: NodeJS.ProcessEnv) => unknown };
export type LoadFull = () => FullHelper;

/** A profile file named after --br makes even QEMU's plain call a policy call (libvirt passes only --br). */
export function profileExists(a: HelperArgs, config: string): boolean {
  return a.bridgeGiven === true && existsSync(`${config}/profiles/${a.bridge}.json`);
}

export function helperMain(argv: readonly string[], loadFull: LoadFull, env: NodeJS.ProcessEnv = process.env): number {
  try {
    const args = parseHelperArgs(argv);
    if (args.help) {
      process.stderr.write(HELPER_USAGE + '\n');
      return ExitCode.OK;
    }
    if (needsPolicy(args) || profileExists(args, configPaths(args, env, callerIsRoot()).config)) loadFull().runPolicyHelper(args, env);
    else runHelper(args, env);
    return ExitCode.OK;
  } catch (e) {
    const { exitCode, line } = describeError(e);
    process.stderr.write(`qemu-net-helper: ${line}\n`);
    return exitCode;
  }
}
