// The state directory holds what privileged runs later act on (records name
// links to delete, tables to drop, VFs to restore): only the user we run as
// may write there. Checked at the start of every run that uses it, and
// created (mode 0711: the broker's socket may live in it) when missing. Its
// subdirectories get the same check when they are made or reused.
import { lstatSync, mkdirSync } from 'node:fs';
import { ConfigError } from '../errors.js';

/** Throws unless `dir` is a real directory (no symbolic link), ours, and writable by nobody else. */
export function checkOwnDir(dir: string, what: string): void {
  const st = lstatSync(dir);
  if (st.isSymbolicLink() || !st.isDirectory()) throw new ConfigError(`${what} ${dir} is not a directory (a symbolic link or a file)`, 'remove it; the helper makes its own');
  const me = process.geteuid?.() ?? 0;
  if (st.uid !== me) throw new ConfigError(`${what} ${dir} is owned by uid ${st.uid}, not by uid ${me}`, 'someone else could forge its records: remove it, or fix its owner');
  if ((st.mode & 0o022) !== 0) throw new ConfigError(`${what} ${dir} is writable by group or others (mode ${(st.mode & 0o777).toString(8)})`, `chmod go-w ${dir}`);
}

export function checkStateDir(dir: string): void {
  if (!lstatSync(dir, { throwIfNoEntry: false })) mkdirSync(dir, { recursive: true, mode: 0o711 });
  checkOwnDir(dir, 'state directory');
}
