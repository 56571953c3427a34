import { UsageError } from '../errors.js';

const IFNAMSIZ = 16;

/**
 * The kernel's own rule (dev_valid_name): 1..15 bytes, not "." or "..", no
 * '/', ':' or whitespace. We also refuse control and non-ASCII bytes: such a
 * name is never what a user meant and breaks every tool that prints it.
 */
export function interfaceNameProblem(name: string): string | null {
  if (name.length === 0) return 'is empty';
  if (Buffer.byteLength(name) >= IFNAMSIZ) return `is ${Buffer.byteLength(name)} bytes; interface names have at most ${IFNAMSIZ - 1}`;
  if (name === '.' || name === '..') return 'is not a valid interface name';
  // eslint-disable-next-line no-control-regex
  if (/[\s/:\x00-\x1f\x7f-\uffff]/.test(name)) return "contains a character interface names cannot have (space, '/', ':' or a control/non-ASCII byte)";
  return null;
}

export function checkInterfaceName(name: string, what: string): string {
  const p = interfaceNameProblem(name);
  if (p) throw new UsageError(`${what} name '${printable(name)}' ${p}`, 'choose a name of 1-15 letters, digits, or -_.');
  return name;
}

function printable(s: string): string {
  // eslint-disable-next-line no-control-regex
  return s.replace(/[\x00-\x1f\x7f]/g, (ch) => `\\x${ch.charCodeAt(0).toString(16).padStart(2, '0')}`);
}
