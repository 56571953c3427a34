// `qemu-net-helper run`: set up every NIC from the policies, start QEMU as our
// child with the NICs' fds inherited (fd 3, 4, ...), forward signals, and when
// QEMU exits remove what outlives its fds and return its exit status.
import { spawn } from 'node:child_process';
import { constants } from 'node:os';
import { UsageError, NotFoundError } from '../errors.js';
import { processHost } from '../host/context.js';
import { releaseEndpoint } from '../lifecycle/release.js';
import { ownerOf, type OwnerRef } from '../state/owner.js';
import { nicArgs, sharedMemoryArgs, shellLine, vhostUserNicArgs, wantsKvm, type NicFds } from './qemu-args.js';
import { parseNicSpecs } from './nic-spec.js';
import type { PreparedEndpoint } from '../setup/endpoint.js';
import { setupNic, splitFds } from './setup-nic.js';
import type { NicSpec } from './nic-spec.js';

export interface RunOptions {
  nics: readonly string[];
  /** QEMU and its own arguments (everything after `--`). */
  command: readonly string[];
  dryRun?: boolean;
  explain?: boolean;
  env?: NodeJS.ProcessEnv;
  /** Lines for people (stderr). */
  log?: (line: string) => void;
  /** The command line, for --dry-run (stdout). */
  out?: (line: string) => void;
}

const FORWARDED: NodeJS.Signals[] = ['SIGINT', 'SIGTERM', 'SIGHUP', 'SIGQUIT', 'SIGUSR1', 'SIGUSR2'];

/** Runs QEMU with the NICs; resolves with QEMU's exit status (128+N when killed by signal N). */
export async function runWithNics(o: RunOptions): Promise<number> {
  const env = o.env ?? process.env;
  const log = o.log ?? ((l: string) => process.stderr.write(l + '\n'));
  if (o.command.length === 0) throw new UsageError('no QEMU command given', "put it after '--': qemu-net-helper run --nic mode=bridge,br=br0 -- qemu-system-x86_64 ...");
  const specs = parseNicSpecs(o.nics);
  for (const w of specs.flatMap((x) => x.warnings)) log(`qemu-net-helper: warning: ${w}`);
  const host = processHost(env);
  const done: { spec: NicSpec; prepared: PreparedEndpoint }[] = [];
  const undoAll = (): void => {
    for (const n of done.reverse()) {
      const left = n.prepared.undo();
      if (left.length > 0) log(`run: could not undo for ${n.spec.id}: ${left.join('; ')} (run 'qemu-net-helper gc')`);
    }
    done.length = 0;
  };
  // Inherited fds are numbered from 3 in QEMU, in this order.
  const passed: number[] = [];
  const args: string[] = [];
  try {
    for (const spec of specs) {
      const prepared = setupNic(spec, host, env);
      done.push({ spec, prepared });
      const { choice } = prepared;
      if (o.explain) for (const e of choice.explain) log(`explain: ${spec.id}: ${e.kernel}/${e.transport}: ${e.decision}: ${e.reason}`);
      const { queueFds, vhostFds } = splitFds(choice);
      const number = (fds: number[]): number[] => fds.map((fd) => { passed.push(fd); return 2 + passed.length; });
      const mac = choice.endpoint.mac ?? spec.mac;
      if (choice.transport.transport === 'vhost-user') {
        if (!args.includes('memory-backend=qnh-mem')) args.push(...sharedMemoryArgs(o.command));
        args.push(...vhostUserNicArgs(spec.id, String(choice.transport.info.socket), mac, wantsKvm(o.command)));
      } else {
        const nic: NicFds = { id: spec.id, queueFds: number(queueFds), vhostFds: number(vhostFds), ...(mac ? { mac } : {}) };
        args.push(...nicArgs(nic));
      }
      log(`run: ${spec.id}: ${choice.endpoint.kernel}/${choice.transport.transport} ${choice.endpoint.ifname}, ${queueFds.length} queue(s)${vhostFds.length ? ' with vhost-net' : ''}${mac ? `, mac ${mac}` : ''}`);
    }
  } catch (e) {
    undoAll();
    throw e;
  }
  const argv = [...o.command, ...args];
  if (o.dryRun) {
    (o.out ?? ((l: string) => process.stdout.write(l + '\n')))(shellLine(argv));
    undoAll();
    return 0;
  }

  const child = spawn(argv[0]!, argv.slice(1), { stdio: ['inherit', 'inherit', 'inherit', ...passed], env });
  // QEMU holds its own copies now (or never will, if exec failed): ours go, so
  // taps die with QEMU; what outlives fds is in the records, owned by QEMU.
  let qemu: OwnerRef | undefined;
  try { if (child.pid) qemu = ownerOf(child.pid); } catch { /* already gone: we release below */ }
  for (const n of done) n.prepared.commit(qemu);
  const forward = (sig: NodeJS.Signals): void => { try { child.kill(sig); } catch { /* gone */ } };
  for (const s of FORWARDED) process.on(s, forward);
  try {
    return await new Promise<number>((resolve, reject) => {
      child.once('error', (e: NodeJS.ErrnoException) => {
        reject(e.code === 'ENOENT' ? new NotFoundError(`cannot run '${argv[0]}': not found`, 'give the QEMU binary after --, e.g. qemu-system-x86_64') : e);
      });
      child.once('exit', (code, signal) => {
        resolve(code ?? 128 + (signal ? constants.signals[signal] ?? 0 : 0));
      });
    });
  } finally {
    for (const s of FORWARDED) process.off(s, forward);
    for (const n of done) {
      if (n.prepared.record.owned.length === 0) continue;
      const r = releaseEndpoint(n.prepared.record, host);
      if (r.failed.length) log(`run: ${n.spec.id}: could not release ${r.failed.join('; ')} (run 'qemu-net-helper gc')`);
    }
  }
}
