// Guest MAC addresses: parse, validate, generate. A guest NIC needs a unicast
// address (bit 0 of the first byte clear) that is not all zero; when the user
// gives none we make one in QEMU's OUI 52:54:00, as QEMU and libvirt do, so
// admins recognise guest NICs by their prefix.
import { randomBytes } from 'node:crypto';
import { UsageError } from '../errors.js';

const MAC_LEN = 6;

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

function isZeroMac(mac: Uint8Array): boolean {
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

/** QEMU's OUI, used by QEMU and libvirt for the MACs they make. */
const QEMU_OUI = [0x52, 0x54, 0x00] as const;

/**
 * A random guest address 52:54:00:xx:xx:xx. QEMU numbers its own defaults
 * 52:54:00:12:34:56 upwards (every guest without mac= gets them): those are
 * drawn again, as is one that would be all zero in its random part.
 */
export function generateMac(random: (n: number) => Buffer = randomBytes): Buffer {
  for (;;) {
    const r = random(3);
    const mac = Buffer.from([...QEMU_OUI, r[0]!, r[1]!, r[2]!]);
    const qemuDefault = mac[3] === 0x12 && mac[4] === 0x34 && (mac[5]! & 0xf0) === 0x50;
    if (!qemuDefault && !(mac[3] === 0 && mac[4] === 0 && mac[5] === 0)) return mac;
  }
}
