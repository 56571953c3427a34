// nftables through the `nft` command. Each call is one transaction (`nft -f -`),
// so a ruleset is installed whole or not at all, and a table is replaced
// atomically with "add table; delete table; table { ... }". We only ever touch
// tables of our own, named qemu_net_helper_* and carrying our comment (the
// callers check both before deleting); other tables are never changed.
import { execFileSync } from 'node:child_process';
import { NotFoundError, PermissionError, SetupError, UnsupportedError } from '../errors.js';
import { SAFE_PATH } from '../host/context.js';

export type NftFamily = 'ip' | 'ip6' | 'inet';

class NftError extends SetupError {
  readonly stderr: string;
  constructor(what: string, stderr: string) {
    super(`nft ${what} failed: ${firstErrorLine(stderr)}`);
    this.stderr = stderr;
  }
}

function firstErrorLine(stderr: string): string {
  const lines = stderr.trim().split('\n');
  return (lines.find((l) => /^Error:/.test(l)) ?? lines[0] ?? 'unknown error').replace(/^Error:\s*/, '');
}

/** Runs `nft` (an absolute path from the host context, never looked up in the caller's PATH). */
function run(args: string[], input: string | undefined, what: string, nft: string | null): string {
  if (!nft) throw new NotFoundError("the 'nft' command is not installed", "install nftables (Debian: 'apt-get install nftables')");
  try {
    return execFileSync(nft, args, { encoding: 'utf8', input: input ?? '', stdio: ['pipe', 'pipe', 'pipe'], env: { PATH: SAFE_PATH, LC_ALL: 'C' } });
  } catch (e) {
    const err = e as { stderr?: string; message: string; code?: string };
    if (err.code === 'ENOENT') throw new NotFoundError(`'${nft}' cannot be run (ENOENT)`, 'install nftables');
    const stderr = err.stderr ?? err.message;
    if (/Operation not permitted/i.test(stderr)) {
      throw new PermissionError(`nft ${what}: operation not permitted`, 'the helper needs CAP_NET_ADMIN');
    }
    if (/Protocol not supported|Could not process rule: No such file or directory/i.test(stderr) && what.startsWith('apply')) {
      throw new UnsupportedError(`nft ${what} failed: ${firstErrorLine(stderr)}`, 'the kernel lacks an nftables feature this ruleset needs (nf_tables, nft_nat/nft_masq, nft_ct)');
    }
    throw new NftError(what, stderr);
  }
}

/** Table and chain names: what nft's scanner takes unquoted; anything else is refused. */
export function isNftIdentifier(name: string): boolean {
  return /^[A-Za-z_][A-Za-z0-9_.-]{0,63}$/.test(name);
}

/** Applies a ruleset text as one transaction. */
export function nftApply(ruleset: string, nft: string | null): void {
  run(['-f', '-'], ruleset, 'apply ruleset', nft);
}

/** Deletes a table; already gone is success. One transaction, so it cannot half-fail. */
export function nftDeleteTable(family: NftFamily, name: string, nft: string | null): void {
  if (!isNftIdentifier(name)) throw new SetupError(`refusing to delete nft table with odd name '${name}'`);
  run(['-f', '-'], `add table ${family} ${name}\ndelete table ${family} ${name}\n`, `delete table ${family} ${name}`, nft);
}

/**
 * The comment of a table (`comment "..."` in its declaration): null when it
 * has none, undefined when the table does not exist. Read from the terse text
 * listing, because nft 1.0.6's JSON does not include table comments.
 */
export function nftTableComment(family: NftFamily, name: string, nft: string | null): string | null | undefined {
  if (!isNftIdentifier(name)) return undefined;
  let out: string;
  try {
    out = run(['-t', 'list', 'table', family, name], undefined, `list table ${family} ${name}`, nft);
  } catch (e) {
    if (e instanceof NftError && /No such file or directory/i.test(e.stderr)) return undefined;
    throw e;
  }
  // "table ip NAME {" then, when there is one, "\tcomment \"...\"" as the next line.
  const m = /^\s*comment "([^"\n]*)"\s*$/.exec(out.split('\n')[1] ?? '');
  return m ? m[1]! : null;
}

export function nftTableExists(family: NftFamily, name: string, nft: string | null): boolean {
  try {
    run(['list', 'table', family, name], undefined, `list table ${family} ${name}`, nft);
    return true;
  } catch (e) {
    if (e instanceof NftError && /No such file or directory/i.test(e.stderr)) return false;
    throw e;
  }
}
