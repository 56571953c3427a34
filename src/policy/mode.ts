// The mode, parsed once: the one place a mode name is turned into what the
// setup needs to know of it (which device it wants, what the ACL checks);
// everything past the parse receives this value, never the string.
import { MODES, type Mode } from '../backends/types.js';
import { AUTO_NAT_RANGE, DEFAULT_NAT_BRIDGE } from '../backends/kernel/nat-plan.js';
import { UsageError } from '../errors.js';

/**
 * - `bridge`: the device is a bridge, named by --dev or else QEMU's --br; the
 *   ACL resource is that bridge.
 * - `nat`: a network of our own; --dev optionally names its bridge, which may
 *   not exist yet; the ACL checks that bridge and the subnet.
 * - `uplink`: every other mode hangs off an existing device (--dev); the ACL
 *   checks the mode and the device.
 */
export type ParsedMode =
  | { readonly kind: 'bridge'; readonly name: 'bridge' }
  | { readonly kind: 'nat'; readonly name: 'nat'; readonly defaultBridge: string; readonly defaultSubnet: string }
  | { readonly kind: 'uplink'; readonly name: Exclude<Mode, 'bridge' | 'nat'> };

/** A mode name already known to be valid (a record's, a checked CNI config's). */
export function modeOf(name: Mode): ParsedMode {
  if (name === 'bridge') return { kind: 'bridge', name };
  if (name === 'nat') return { kind: 'nat', name, defaultBridge: DEFAULT_NAT_BRIDGE, defaultSubnet: AUTO_NAT_RANGE };
  return { kind: 'uplink', name };
}

/** A mode as a caller wrote it; anything else is a usage error listing the modes. */
export function parseMode(text: string): ParsedMode {
  if (!(MODES as readonly string[]).includes(text)) throw new UsageError(`unknown mode '${text}'`, `use one of ${MODES.join(', ')}`);
  return modeOf(text as Mode);
}
