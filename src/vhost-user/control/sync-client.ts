// One request to a running switch's control socket, synchronously: the
// helper's setup path is synchronous (QEMU waits for it), so adding a port for
// a new endpoint cannot await Node's net module. Connect, write one JSON
// line, wait (bounded) for one reply line, close.
import { SetupError } from '../../errors.js';
import { closeFd, readFd, SysError, waitReadableSync, writeFd } from '../../sys/libc.js';
import { connectUnix } from '../../sys/unix-socket.js';
import { MAX_LINE } from './codec.js';

export type ControlReply = { ok: boolean; error?: string; [k: string]: unknown };

export function controlRequest(path: string, req: object, timeoutMs = 10_000): ControlReply {
  let fd: number;
  try {
    fd = connectUnix(path);
  } catch (e) {
    throw new SetupError(`no vhost-user switch answers at ${path} (${e instanceof SysError ? e.code : String(e)})`, "start one: 'qemu-net-helper vhost-user serve --control PATH'");
  }
  try {
    const out = Buffer.from(JSON.stringify(req) + '\n');
    // A unix socket takes a line this small whole, even non-blocking.
    if (writeFd(fd, out, out.length) !== out.length) throw new SetupError(`cannot write to the switch at ${path}`);
    const buf = Buffer.alloc(MAX_LINE);
    let got = 0;
    const deadline = Date.now() + timeoutMs;
    for (;;) {
      const nl = buf.subarray(0, got).indexOf(10);
      if (nl >= 0) return JSON.parse(buf.subarray(0, nl).toString('utf8')) as ControlReply;
      if (got === buf.length) throw new SetupError(`the switch at ${path} answered a line longer than ${MAX_LINE} bytes`);
      if (!waitReadableSync(fd, Math.max(0, deadline - Date.now()))) throw new SetupError(`the switch at ${path} did not answer within ${timeoutMs / 1000} s`);
      const n = readFd(fd, buf.subarray(got), buf.length - got);
      if (n === 0) throw new SetupError(`the switch at ${path} closed the connection without an answer`);
      if (n > 0) got += n;
    }
  } finally {
    closeFd(fd);
  }
}
