// Entry of the CNI plugin: bin/qemu-net-helper.cjs comes here when
// CNI_COMMAND is set. Reads the config from stdin, runs the command and
// prints the result (ADD, VERSION) or the spec's error JSON on stdout; logs
// go to stderr. Exit status 0 on success, 1 on any error (the code is in the JSON).
import { callerIsRoot, hasNetAdmin } from '../host/context.js';
import { readFileSync } from 'node:fs';
import { cmdAdd } from './add.js';
import { cmdCheck } from './check.js';
import { parseConfig, peekVersion } from './config.js';
import { cmdDel, cmdGc } from './del-gc.js';
import { cniHost } from './host-paths.js';
import { readEnv } from './env.js';
import { CniCode, CniError, errorJson, toCniError } from './errors.js';
import { writeResult } from './result.js';
import { cmdStatus } from './status.js';
import { isSupported, LATEST, requireCommandIn, requireSupported, SUPPORTED_VERSIONS } from './version.js';

function readStdin(): string {
  try {
    return readFileSync(0, 'utf8');
  } catch (e) {
    const code = (e as NodeJS.ErrnoException).code;
    if (code === 'EAGAIN' || code === 'EOF') return '';
    throw new CniError(CniCode.IO_FAILURE, `cannot read the network configuration from stdin: ${code ?? String(e)}`);
  }
}

export interface CniOutcome { status: number; stdout: string }

export async function runCni(env: NodeJS.ProcessEnv, stdin: string): Promise<CniOutcome> {
  const asked = peekVersion(stdin);
  const replyVersion = asked && isSupported(asked) ? asked : LATEST;
  try {
    const e = readEnv(env);
    // A runtime runs plugins as root. Holding privileges the caller did not
    // give us (file capabilities: AT_SECURE), we would act for whoever set
    // CNI_NETNS and friends: that is the broker's job, not a plugin's.
    if (e.command !== 'VERSION' && !callerIsRoot() && hasNetAdmin()) {
      throw new CniError(CniCode.HELPER_BASE + 4, 'qemu-net-helper runs as a CNI plugin only for a root caller (a runtime); it holds privileges its caller did not give it');
    }
    if (e.command === 'VERSION') {
      return { status: 0, stdout: JSON.stringify({ cniVersion: replyVersion, supportedVersions: SUPPORTED_VERSIONS }) };
    }
    if (asked === undefined) {
      parseConfig(stdin); // names what is wrong: not JSON, not an object...
      throw new CniError(CniCode.DECODE_FAILURE, 'the network configuration on stdin has no cniVersion');
    }
    requireSupported(asked);
    requireCommandIn(e.command, asked);
    const conf = parseConfig(stdin);
    const raw = JSON.parse(stdin) as Record<string, unknown>;
    const host = cniHost(conf, env);
    switch (e.command) {
      case 'ADD': {
        const r = await cmdAdd(conf, raw, e, host);
        return { status: 0, stdout: JSON.stringify(writeResult(r, conf.cniVersion)) };
      }
      case 'DEL': cmdDel(conf, raw, e, host); break;
      case 'CHECK': cmdCheck(conf, raw, e, host); break;
      case 'GC': cmdGc(conf, raw, e, host); break;
      case 'STATUS': cmdStatus(conf, raw, e, host); break;
    }
    return { status: 0, stdout: '' };
  } catch (err) {
    const c = toCniError(err);
    return { status: 1, stdout: JSON.stringify(errorJson(c, replyVersion)) };
  }
}

/** The bundled entry: never throws, exits with the status. */
export function cniMain(): void {
  let stdin = '';
  try {
    stdin = readStdin();
  } catch (err) {
    process.stdout.write(JSON.stringify(errorJson(toCniError(err), LATEST)) + '\n');
    process.exitCode = 1;
    return;
  }
  void runCni(process.env, stdin).then((o) => {
    if (o.stdout) process.stdout.write(o.stdout + '\n');
    process.exitCode = o.status;
  });
}
