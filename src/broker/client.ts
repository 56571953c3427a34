// The helper as the broker's client: run by an unprivileged QEMU or libvirt,
// it cannot make a tap, so it asks the broker (a root daemon) over a unix
// socket. It sends its flags and waits; the broker takes QEMU's socket out of
// this process with pidfd_getfd, sends QEMU the fd itself and answers with the
// exit code and the one line to print. Only node:net and node:fs: no native
// code, no oclif, so this path costs little more than Node's own start-up.
import { connect } from 'node:net';
import { describeError, ExitCode, HelperError, PermissionError, SetupError, type ExitCodeValue } from '../errors.js';
import { DEFAULT_PATHS, ENV, hasNetAdmin } from '../host/context.js';
import { HELPER_USAGE, parseHelperArgs } from '../helper/args.js';
import { decodeReply, encodeRequest, type BrokerReply, type BrokerRequest } from './protocol.js';

/** How long the client waits for an answer: QEMU waits for the helper with no limit of its own. */
export const CLIENT_TIMEOUT_MS = 120_000;

/** Whether this process must ask the broker: neither root nor holding CAP_NET_ADMIN. */
export function needsBroker(): boolean {
  return !hasNetAdmin();
}

/** The broker's socket: QEMU_NET_HELPER_BROKER only chooses whom to ask, the broker decides everything else. */
export function brokerPath(env: NodeJS.ProcessEnv = process.env): string {
  return env[ENV.broker] || DEFAULT_PATHS.broker;
}

function noBroker(path: string, code: string): PermissionError {
  return new PermissionError(
    `no permission: the helper needs CAP_NET_ADMIN, and no qemu-net-helper broker answers at ${path} (${code})`,
    "start it as root: 'systemctl enable --now qemu-net-helper.socket' or 'qemu-net-helper daemon'",
  );
}

/** Sends one request and resolves with the broker's reply. */
export function askBroker(req: BrokerRequest, path: string, timeoutMs = CLIENT_TIMEOUT_MS): Promise<BrokerReply> {
  return new Promise((resolve, reject) => {
    let sock = connect(path);
    let buf = '';
    let done = false;
    const finish = (err: Error | null, reply?: BrokerReply): void => {
      if (done) return;
      done = true;
      clearTimeout(timer);
      sock.destroy();
      if (err) reject(err);
      else resolve(reply!);
    };
    const timer = setTimeout(() => finish(new SetupError(`the broker at ${path} did not answer within ${timeoutMs / 1000} s`, 'look at its log')), timeoutMs);
    const attach = (): void => {
      sock.setEncoding('utf8');
      sock.on('connect', () => sock.write(encodeRequest(req)));
      sock.on('data', (d: string) => {
        buf += d;
        const nl = buf.indexOf('\n');
        if (nl < 0) return;
        try {
          finish(null, decodeReply(buf.slice(0, nl)));
        } catch (e) {
          finish(new SetupError((e as Error).message));
        }
      });
      sock.on('error', (e: NodeJS.ErrnoException) => {
        const code = e.code ?? 'error';
        if (code === 'EAGAIN' && !done) {
          // The broker's listen queue is full (someone floods it): it accepts
          // and sheds the flood quickly, so try again shortly, within our time.
          sock.removeAllListeners();
          sock.on('error', () => undefined);
          sock.destroy();
          setTimeout(() => {
            if (done) return;
            sock = connect(path);
            attach();
          }, 20 + Math.random() * 80);
          return;
        }
        if (['ENOENT', 'ECONNREFUSED', 'EACCES', 'ENOTSOCK'].includes(code)) finish(noBroker(path, code));
        else finish(new SetupError(`talking to the broker at ${path} failed: ${code}`));
      });
      sock.on('close', () => finish(new SetupError(`the broker at ${path} closed the connection without an answer`, 'look at its log')));
    };
    attach();
  });
}

/** Prints what the broker said and returns its exit code. */
export function report(reply: BrokerReply): number {
  for (const l of reply.lines ?? []) process.stderr.write(l + '\n');
  if (!reply.ok) process.stderr.write(`qemu-net-helper: ${reply.error}\n`);
  return reply.exit;
}

/** The helper protocol through the broker: same flags, same exit codes, same one stderr line. */
export async function helperClientMain(argv: readonly string[], env: NodeJS.ProcessEnv = process.env): Promise<number> {
  try {
    // Checked here too so that a usage error does not need a broker; the broker checks again.
    const args = parseHelperArgs(argv);
    if (args.help) {
      process.stderr.write(HELPER_USAGE + '\n');
      return ExitCode.OK;
    }
    return report(await askBroker({ v: 1, op: 'helper', argv: [...argv] }, brokerPath(env)));
  } catch (e) {
    const { exitCode, line } = describeError(e);
    process.stderr.write(`qemu-net-helper: ${line}\n`);
    return exitCode;
  }
}

/** up/down/list/gc for an unprivileged user: the broker's result, or its refusal as the same error class and exit code. */
export async function viaBroker<T>(req: BrokerRequest, env: NodeJS.ProcessEnv = process.env): Promise<T> {
  const reply = await askBroker(req, brokerPath(env));
  if (!reply.ok) throw new HelperError(reply.exit as ExitCodeValue, reply.error);
  return reply.result as T;
}
