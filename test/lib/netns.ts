// Throwaway network namespaces for tests. Every namespace made here is
// registered for removal at process exit too, so a failing test cannot leak
// one into the machine (the CI machine is reused by later sessions).
import { execFileSync, spawn, type ChildProcess, type SpawnOptions } from 'node:child_process';
import { randomBytes } from 'node:crypto';

const live = new Set<string>();

function removeNs(name: string): void {
  try {
    // Killing what still runs inside first: a namespace with live processes
    // would survive `ip netns del` as an anonymous one.
    const pids = execFileSync('ip', ['netns', 'pids', name], { encoding: 'utf8' }).split(/\s+/).filter(Boolean);
    for (const pid of pids) {
      try { process.kill(Number(pid), 'SIGKILL'); } catch { /* already gone */ }
    }
  } catch { /* namespace already gone */ }
  try { execFileSync('ip', ['netns', 'del', name], { stdio: 'ignore' }); } catch { /* already gone */ }
  live.delete(name);
}

process.on('exit', () => { for (const n of [...live]) removeNs(n); });

export class NetNs {
  readonly name: string;
  private constructor(name: string) { this.name = name; }

  static create(prefix = 'qnht'): NetNs {
    const name = `${prefix}-${process.pid}-${randomBytes(3).toString('hex')}`;
    execFileSync('ip', ['netns', 'add', name]);
    live.add(name);
    const ns = new NetNs(name);
    ns.ip('link', 'set', 'lo', 'up');
    return ns;
  }

  /** Runs a command inside the namespace and returns its stdout. Throws with stderr on failure. */
  exec(cmd: string, ...args: string[]): string {
    try {
      return execFileSync('ip', ['netns', 'exec', this.name, cmd, ...args], { encoding: 'utf8', stdio: ['ignore', 'pipe', 'pipe'] });
    } catch (e) {
      const err = e as { stderr?: string; message: string };
      throw new Error(`${cmd} ${args.join(' ')} in ${this.name}: ${err.stderr?.trim() || err.message}`);
    }
  }

  ip(...args: string[]): string { return this.exec('ip', ...args); }

  /** Spawns a long-running process inside the namespace. */
  spawn(cmd: string, args: string[], opts: SpawnOptions = {}): ChildProcess {
    return spawn('ip', ['netns', 'exec', this.name, cmd, ...args], opts);
  }

  /** Adds a bridge with an address, up. */
  addBridge(name: string, cidr?: string, mtu?: number): void {
    this.ip('link', 'add', name, 'type', 'bridge');
    if (mtu) this.ip('link', 'set', name, 'mtu', String(mtu));
    if (cidr) this.ip('addr', 'add', cidr, 'dev', name);
    this.ip('link', 'set', name, 'up');
  }

  /** Adds the veth pair a <-> b, both up. */
  addVeth(a: string, b: string): void {
    this.ip('link', 'add', a, 'type', 'veth', 'peer', 'name', b);
    this.ip('link', 'set', a, 'up');
    this.ip('link', 'set', b, 'up');
  }

  /** Interface names present in the namespace. */
  links(): string[] {
    const out = JSON.parse(this.ip('-json', 'link', 'show')) as { ifname: string }[];
    return out.map((l) => l.ifname);
  }

  linkDetails(name: string): Record<string, unknown> {
    return (JSON.parse(this.ip('-json', '-d', 'link', 'show', 'dev', name)) as Record<string, unknown>[])[0]!;
  }

  destroy(): void { removeNs(this.name); }
}

/** Runs fn with a fresh namespace, removed afterwards whatever happens. */
export async function withNetNs<T>(fn: (ns: NetNs) => Promise<T> | T, prefix?: string): Promise<T> {
  const ns = NetNs.create(prefix);
  try {
    return await fn(ns);
  } finally {
    ns.destroy();
  }
}

/** Runs a shell line in the namespace, resolving with its exit code (-1 when killed by a signal). */
export function nsShell(ns: NetNs, line: string): Promise<number> {
  return new Promise((resolve) => {
    const p = ns.spawn('sh', ['-c', line], { stdio: 'ignore' });
    p.on('exit', (code) => resolve(code ?? -1));
  });
}
