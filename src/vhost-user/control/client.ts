// One request to a running switch's control socket from an async caller (the
// `vhost-user show|ports|fdb|stats|...` commands): connect, send one line,
// half-close, read the one reply line. The synchronous twin for the helper's
// setup path is sync-client.ts.
import { connect } from 'node:net';
import { NotFoundError, SetupError } from '../../errors.js';
import { MAX_LINE } from './codec.js';

export type Reply = { ok: boolean; error?: string; [k: string]: unknown };

/** The reply object ({"ok":false,...} included); throws only when no reply line arrives. */
function controlCall(path: string, req: object, timeoutMs = 10_000): Promise<Reply> {
  return new Promise<Reply>((resolve, reject) => {
    const sock = connect(path);
    const chunks: Buffer[] = [];
    let got = 0;
    const done = (err: Error | null, r?: Reply): void => {
      clearTimeout(timer);
      sock.destroy();
      if (err) reject(err);
      else resolve(r!);
    };
    const timer = setTimeout(() => done(new SetupError(`the switch at ${path} did not answer within ${timeoutMs / 1000} s`)), timeoutMs);
    sock.once('connect', () => { sock.end(`${JSON.stringify(req)}\n`); });
    sock.on('data', (b: Buffer) => {
      chunks.push(b);
      got += b.length;
      const all = Buffer.concat(chunks);
      const nl = all.indexOf(10);
      if (nl >= 0) {
        try {
          done(null, JSON.parse(all.subarray(0, nl).toString('utf8')) as Reply);
        } catch {
          done(new SetupError(`the switch at ${path} answered something that is not JSON`));
        }
      } else if (got > MAX_LINE) done(new SetupError(`the switch at ${path} answered a line longer than ${MAX_LINE} bytes`));
    });
    sock.once('end', () => done(new SetupError(`the switch at ${path} closed the connection without an answer`)));
    sock.once('error', (e: NodeJS.ErrnoException) => {
      const code = e.code ?? e.message;
      const hint = "start one: 'qemu-net-helper vhost-user serve --control PATH', or pass its --control";
      if (code === 'ENOENT' || code === 'ECONNREFUSED') done(new NotFoundError(`no vhost-user switch answers at ${path} (${code})`, hint));
      else done(new SetupError(`cannot reach the vhost-user switch at ${path} (${code})`, code === 'EACCES' ? 'ask its owner for access to the control socket' : hint));
    });
  });
}

/** The reply of a request that must succeed; the switch's refusal becomes an error (exit 10). */
export async function controlOk(path: string, req: object): Promise<Reply> {
  const r = await controlCall(path, req);
  if (!r.ok) throw new SetupError(`the switch at ${path} refused: ${r.error ?? 'no reason given'}`);
  return r;
}
