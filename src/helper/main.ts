// Entry of the helper fast path: QEMU runs us once per NIC and waits, so this
// loads only what the bridge/tap path needs (no oclif) and writes nothing to
// stdout, which may be QEMU's monitor.
import { describeError, ExitCode } from '../errors.js';
import { HELPER_USAGE, parseHelperArgs } from './args.js';
import { runHelper } from './run.js';

export function helperMain(argv: readonly string[]): number {
  try {
    const args = parseHelperArgs(argv);
    if (args.help) {
      process.stderr.write(HELPER_USAGE + '\n');
      return ExitCode.OK;
    }
    runHelper(args);
    return ExitCode.OK;
  } catch (e) {
    const { exitCode, line } = describeError(e);
    process.stderr.write(`qemu-net-helper: ${line}\n`);
    return exitCode;
  }
}
