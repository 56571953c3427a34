// A real broker (`qemu-net-helper daemon`) for tests: started inside a test
// namespace (it acts in its own), on a temp socket with a temp ACL, config and
// state directory; its stderr log collected line by line; stopped with
// SIGTERM (SIGKILL if it lingers) and its files removed, also at process exit.
import type { ChildProcess } from 'node:child_process';
import { chmodSync, mkdirSync, mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import type { NetNs } from './netns.js';
import { BIN } from './paths.js';

export interface BrokerOptions {
  /** ACL file text (bridge.conf syntax). */
  acl: string;
  /** profiles/NAME.json in the broker's config directory. */
  profiles?: Record<string, unknown>;
  /** Socket path; default DIR/broker.sock in the temp directory. */
  socket?: string;
  /** More `daemon` flags (bounds such as --max-connections-per-user, --metrics PATH). */
  args?: string[];
  /** How long to wait for "broker: listening on" (30 s: a loaded 2-core machine). */
  startTimeoutMs?: number;
}

export interface BrokerRun {
  /** The current broker process (a new one after restart()). */
  readonly proc: ChildProcess;
  readonly pid: number;
  /** Temp directory (mode 0755, root's): bridge.conf, config/, state/, broker.sock. */
  dir: string;
  socket: string;
  aclFile: string;
  configDir: string;
  stateDir: string;
  /** Log lines so far, of every broker process started here (stderr, one per decision). */
  lines: () => string[];
  /** Lines that are decisions about requests (uid=... pid=...: what: verdict). */
  decisions: () => string[];
  /** Resolves with the first line (seen already or later, from line index `from`) matching re. */
  waitForLine: (re: RegExp, timeoutMs?: number, from?: number) => Promise<string>;
  /** Environment for a client: QEMU_NET_HELPER_BROKER pointing at this broker. */
  clientEnv: (base?: NodeJS.ProcessEnv) => NodeJS.ProcessEnv;
  /** SIGKILLs the broker (a crash) and waits until it is gone. */
  crash: () => Promise<void>;
  /** Starts a new broker on the same socket, ACL, config and state directory (after crash()), with extra environment if given. */
  restart: (env?: NodeJS.ProcessEnv) => Promise<void>;
  /** SIGTERM, SIGKILL after 5 s; removes the temp directory (and a socket elsewhere). Idempotent. */
  stop: () => Promise<void>;
}

const live = new Set<ChildProcess>();
const dirs = new Set<string>();
process.on('exit', () => {
  for (const p of live) { try { p.kill('SIGKILL'); } catch { /* gone */ } }
  for (const d of dirs) rmSync(d, { recursive: true, force: true });
});

export async function startTestBroker(ns: NetNs, opts: BrokerOptions): Promise<BrokerRun> {
  const dir = mkdtempSync(join(tmpdir(), 'qnh-broker-'));
  dirs.add(dir);
  // Unprivileged clients must reach the socket through this directory.
  chmodSync(dir, 0o755);
  const aclFile = join(dir, 'bridge.conf');
  const configDir = join(dir, 'config');
  const stateDir = join(dir, 'state');
  writeFileSync(aclFile, opts.acl, { mode: 0o644 });
  mkdirSync(join(configDir, 'profiles'), { recursive: true, mode: 0o755 });
  for (const [name, p] of Object.entries(opts.profiles ?? {})) writeFileSync(join(configDir, 'profiles', `${name}.json`), JSON.stringify(p));
  // The broker refuses a state directory others could write (forged records).
  mkdirSync(stateDir, { mode: 0o700 });
  const socket = opts.socket ?? join(dir, 'broker.sock');

  const log: string[] = [];
  const waiters = new Set<() => void>();
  let proc!: ChildProcess;
  let exited!: Promise<unknown>;
  let gone = true;
  const notify = (): void => { for (const w of [...waiters]) w(); };

  const launch = (extra: NodeJS.ProcessEnv): void => {
    const p = ns.spawn(process.execPath, [BIN, 'daemon', '--socket', socket, '--acl', aclFile, '--config', configDir, ...(opts.args ?? [])], {
      stdio: ['ignore', 'ignore', 'pipe'],
      env: { ...process.env, QEMU_NET_HELPER_STATE_DIR: stateDir, ...extra },
    });
    live.add(p);
    proc = p;
    gone = false;
    let partial = '';
    p.stderr!.setEncoding('utf8').on('data', (d: string) => {
      partial += d;
      let i: number;
      while ((i = partial.indexOf('\n')) >= 0) {
        log.push(partial.slice(0, i));
        partial = partial.slice(i + 1);
      }
      notify();
    });
    exited = new Promise((res) => p.once('close', () => {
      if (partial) log.push(partial);
      live.delete(p);
      if (proc === p) gone = true;
      notify();
      res(undefined);
    }));
  };

  const waitForLine = (re: RegExp, timeoutMs = 15_000, from = 0): Promise<string> => new Promise((resolve, reject) => {
    let timer: NodeJS.Timeout | undefined;
    const check = (): void => {
      const hit = log.slice(from).find((l) => re.test(l));
      const fail = (why: string): void => {
        waiters.delete(check);
        clearTimeout(timer);
        reject(new Error(`broker: ${why} waiting for ${re}; log:\n${log.join('\n')}`));
      };
      if (hit !== undefined) {
        waiters.delete(check);
        clearTimeout(timer);
        resolve(hit);
      } else if (gone) fail('exited');
      else if (timer === undefined) timer = setTimeout(() => fail(`no line within ${timeoutMs} ms`), timeoutMs);
    };
    waiters.add(check);
    check();
  });

  const kill = async (first: NodeJS.Signals): Promise<void> => {
    if (gone) return;
    const p = proc;
    p.kill(first);
    const t = setTimeout(() => p.kill('SIGKILL'), 5000);
    await exited;
    clearTimeout(t);
  };

  let stopping: Promise<void> | undefined;
  const stop = (): Promise<void> => {
    stopping ??= (async () => {
      await kill('SIGTERM');
      if (opts.socket) rmSync(opts.socket, { force: true });
      rmSync(dir, { recursive: true, force: true });
      dirs.delete(dir);
    })();
    return stopping;
  };

  const started = async (extra: NodeJS.ProcessEnv = {}): Promise<void> => {
    const from = log.length;
    launch(extra);
    try {
      await waitForLine(/^broker: listening on /, opts.startTimeoutMs ?? 30_000, from);
    } catch (e) {
      await stop();
      throw e;
    }
  };
  await started();

  return {
    get proc() { return proc; },
    get pid() { return proc.pid!; },
    dir, socket, aclFile, configDir, stateDir, waitForLine, stop,
    crash: () => kill('SIGKILL'),
    restart: async (env?: NodeJS.ProcessEnv) => {
      if (!gone) throw new Error('broker: restart() while it still runs; crash() it first');
      await started(env);
    },
    lines: () => [...log],
    decisions: () => log.filter((l) => /^broker: uid=\d+ pid=\d+ /.test(l)),
    clientEnv: (base = process.env) => ({ ...base, QEMU_NET_HELPER_BROKER: socket }),
  };
}
