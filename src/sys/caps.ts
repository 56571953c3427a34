import { readFileSync } from 'node:fs';

export const CAP_NET_ADMIN = 12;

/** Whether this process holds a capability in its effective set. */
export function hasCapability(cap: number): boolean {
  try {
    const m = /^CapEff:\s*([0-9a-f]+)$/m.exec(readFileSync('/proc/self/status', 'latin1'));
    return m ? (BigInt('0x' + m[1]) >> BigInt(cap)) % 2n === 1n : false;
  } catch {
    return false;
  }
}
