// The state directory holds what privileged runs later act on (records name
// links to delete, tables to drop, VFs to restore): only the user we run as
// may write there. Checked at the start of every run that uses it, and
// created (mode 0711: the broker's socket may live in it) when missing.
import { lstatSync, mkdirSync } from 'node:fs';
import { ConfigError } from '../errors.js';

export function checkStateDir(dir: string): void {
  let st = lstatSync(dir, { throwIfNoEntry: false });
  if (!st) {
    mkdirSync(dir, { recursive: true, mode: 0o711 });
    st = lstatSync(dir);
  }
  if (st.isSymbolicLink() || !st.isDirectory()) throw new ConfigError(`state directory ${dir} is not a directory (a symbolic link or a file)`, 'remove it; the helper makes its own');
  const me = process.geteuid?.() ?? 0;
  if (st.uid !== me) throw new ConfigError(`state directory ${dir} is owned by uid ${st.uid}, not by uid ${me}`, 'someone else could forge its records: remove it, or fix its owner');
  if ((st.mode & 0o022) !== 0) throw new ConfigError(`state directory ${dir} is writable by group or others (mode ${(st.mode & 0o777).toString(8)})`, `chmod go-w ${dir}`);
}
