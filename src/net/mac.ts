// Guest MAC addresses: parse, validate, generate. A guest NIC needs a unicast
// address (bit 0 of the first byte clear) that is not all zero; when the user
// gives none we make a random locally administered one (bit 1 set), which can
// never collide with a vendor-assigned address.
import { randomBytes } from 'node:crypto';
import { UsageError } from '../errors.js';

export const MAC_LEN = 6;

export function formatMac(mac: Uint8Array): string {
  return Array.from(mac.subarray(0, MAC_LEN), (b) => b.toString(16).padStart(2, '0')).join(':');
}

/** aa:bb:cc:dd:ee:ff, aa-bb-cc-dd-ee-ff or aabbccddeeff (any case); null when malformed. */
export function parseMac(text: string): Buffer | null {
  const m = /^([0-9a-f]{2})([:-]?)([0-9a-f]{2})\2([0-9a-f]{2})\2([0-9a-f]{2})\2([0-9a-f]{2})\2([0-9a-f]{2})$/i.exec(text.trim());
  if (!m) return null;
  return Buffer.from([m[1], m[3], m[4], m[5], m[6], m[7]].map((h) => parseInt(h!, 16)));
}

export function isMulticastMac(mac: Uint8Array): boolean {
  return (mac[0]! & 0x01) !== 0;
}

export function isLocallyAdministered(mac: Uint8Array): boolean {
  return (mac[0]! & 0x02) !== 0;
}

export function isZeroMac(mac: Uint8Array): boolean {
  return mac.subarray(0, MAC_LEN).every((b) => b === 0);
}

/** Why `mac` cannot be a guest NIC's address, or null when it can. */
export function guestMacProblem(mac: Uint8Array): string | null {
  if (mac.length !== MAC_LEN) return `has ${mac.length} bytes, not ${MAC_LEN}`;
  if (isZeroMac(mac)) return 'is all zero';
  // ff:ff:ff:ff:ff:ff is caught here too: broadcast is a multicast address.
  if (isMulticastMac(mac)) return 'is a multicast address (the lowest bit of the first byte is set)';
  return null;
}

/** Throws UsageError when `mac` cannot be a guest NIC's address; returns it otherwise. */
export function checkGuestMac(mac: Uint8Array, what = 'guest MAC'): Buffer {
  const p = guestMacProblem(mac);
  if (p) {
    throw new UsageError(`${what} ${formatMac(mac)} ${p}`, 'give a unicast address such as 52:54:00:12:34:56, or none to get a generated one');
  }
  return Buffer.from(mac.subarray(0, MAC_LEN));
}

/** Parses and validates in one step (for flags and policy values). */
export function parseGuestMac(text: string, what = 'guest MAC'): Buffer {
  const mac = parseMac(text);
  if (!mac) throw new UsageError(`${what} '${text}' is not a MAC address`, 'write it as six hex pairs, e.g. 52:54:00:12:34:56');
  return checkGuestMac(mac, what);
}

/**
 * A random locally administered unicast address. The first byte is never
 * 0xfe: that prefix is what the bridge+tap kernel gives host-side taps so the
 * bridge keeps its own address, and a guest must not look like one of them.
 */
export function generateMac(random: (n: number) => Buffer = randomBytes): Buffer {
  for (;;) {
    const mac = Buffer.from(random(MAC_LEN));
    mac[0] = (mac[0]! & 0xfc) | 0x02;
    if (mac[0] !== 0xfe && !isZeroMac(mac)) return mac;
  }
}
