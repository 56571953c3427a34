// A broker for tests: `qemu-net-helper daemon` inside a namespace, on a
// temporary socket, with its own ACL, configuration and state directories
// (root-owned 0700, as the broker checks), its log collected line by line.
import { chmodSync, mkdirSync, mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import type { ChildProcess } from 'node:child_process';
import type { NetNs } from './netns.js';
import { BIN } from './paths.js';
import { eventually } from './wait.js';

export interface TestBroker {
  dir: string;
  socket: string;
  acl: string;
  config: string;
  stateDir: string;
  proc: ChildProcess;
  log: string[];
  /** Environment for a client: where the broker is. */
  clientEnv: NodeJS.ProcessEnv;
  stop(): Promise<void>;
  kill(): Promise<void>;
}

export function brokerDirs(acl: string): { dir: string; socket: string; acl: string; config: string; stateDir: string } {
  const dir = mkdtempSync(join(tmpdir(), 'qnh-broker-'));
  // Clients (other uids) must reach the socket inside it.
  chmodSync(dir, 0o711);
  const paths = { dir, socket: join(dir, 'broker.sock'), acl: join(dir, 'bridge.conf'), config: join(dir, 'config'), stateDir: join(dir, 'state') };
  writeFileSync(paths.acl, acl);
  mkdirSync(join(paths.config, 'profiles'), { recursive: true });
  return paths;
}

/** Starts (or restarts, with `reuse`) a broker in `ns` and waits until it listens. */
export async function startTestBroker(ns: NetNs, acl: string, opts: { env?: NodeJS.ProcessEnv; reuse?: TestBroker } = {}): Promise<TestBroker> {
  const p = opts.reuse ?? brokerDirs(acl);
  const log: string[] = [];
  const env = { ...process.env, QEMU_NET_HELPER_STATE_DIR: p.stateDir, ...opts.env };
  const proc = ns.spawn(process.execPath, [BIN, 'daemon', '--socket', p.socket, '--acl', p.acl, '--config', p.config], { stdio: ['ignore', 'ignore', 'pipe'], env });
  let partial = '';
  proc.stderr!.setEncoding('utf8').on('data', (d: string) => {
    partial += d;
    const lines = partial.split('\n');
    partial = lines.pop()!;
    log.push(...lines);
  });
  const exited = new Promise<void>((r) => proc.once('exit', () => r()));
  await eventually('the broker to listen', () => log.some((l) => l.startsWith('broker: listening')) || proc.exitCode !== null, 60_000);
  if (proc.exitCode !== null) throw new Error(`broker exited: ${log.join('\n')}`);
  const b: TestBroker = {
    ...p, proc, log,
    clientEnv: { PATH: process.env.PATH, QEMU_NET_HELPER_BROKER: p.socket },
    async stop() {
      if (proc.exitCode === null && proc.signalCode === null) proc.kill('SIGTERM');
      await exited;
    },
    async kill() {
      proc.kill('SIGKILL');
      await exited;
    },
  };
  return b;
}

export function removeBrokerDirs(b: { dir: string } | undefined): void {
  if (b) rmSync(b.dir, { recursive: true, force: true });
}
