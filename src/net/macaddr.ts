import { randomBytes } from 'node:crypto';
import { UsageError } from '../errors.js';
import { parseMac } from '../sys/netdev.js';

/** A guest MAC must be unicast and not all zeros: the kernel would refuse it or the LAN misroute it. */
export function checkGuestMac(text: string): Buffer {
  const mac = parseMac(text);
  if (!mac) throw new UsageError(`'${text}' is not a MAC address`, 'write it like 52:54:00:12:34:56');
  if (mac[0]! & 1) throw new UsageError(`MAC ${text} is a multicast address; a NIC needs a unicast one`, 'clear the lowest bit of the first byte (e.g. 52:54:00:...)');
  if (mac.every((b) => b === 0)) throw new UsageError(`MAC ${text} is all zeros`);
  return mac;
}

/** A random locally administered unicast MAC (QEMU's own prefix style 52:54:00 is not ours to take). */
export function randomLocalMac(): Buffer {
  const mac = randomBytes(6);
  mac[0] = (mac[0]! & 0xfc) | 0x02;
  return mac;
}
