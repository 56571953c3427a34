// Entry of the helper: QEMU runs us once per NIC and waits, so the plain
// bridge case loads only what it needs (no oclif, no zod) and writes nothing
// to stdout, which may be QEMU's monitor. Which path serves the request is
// decided in serve.ts, the same function the broker calls; the policy path
// comes through `loadFull`, so that the bundled fast path and the unbundled
// library can each supply it their own way.
import { describeError, ExitCode } from '../errors.js';
import { processCaller } from '../access/caller.js';
import { HELPER_USAGE, parseHelperArgs } from './args.js';
import { requireNetAdmin } from './run.js';
import { serveHelperRequest, type LoadFull } from './serve.js';
import { callerIsRoot, configPaths, processHost } from '../host/context.js';

export function helperMain(argv: readonly string[], loadFull: LoadFull, env: NodeJS.ProcessEnv = process.env): number {
  try {
    const args = parseHelperArgs(argv);
    if (args.help) {
      process.stderr.write(HELPER_USAGE + '\n');
      return ExitCode.OK;
    }
    const paths = configPaths(args, env, callerIsRoot());
    serveHelperRequest(args, args.socketpair ?? args.fd, {
      host: () => processHost(env), acl: paths.acl, config: paths.config, caller: processCaller(),
      log: (l) => process.stderr.write(l + '\n'), requirePrivilege: requireNetAdmin, leaveWatcher: true,
    }, loadFull);
    return ExitCode.OK;
  } catch (e) {
    const { exitCode, line } = describeError(e);
    process.stderr.write(`qemu-net-helper: ${line}\n`);
    return exitCode;
  }
}
