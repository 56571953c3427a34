// The switch's forwarding decision: for one frame (ingress port, destination
// and source MAC), which ports it leaves on. Pure and allocation-free (the
// caller passes the output array), so the whole decision table is
// unit-tested without rings.
//
// Modes are the helper's words, per port:
// - veb: ports switch locally; unknown and group destinations are flooded to
//   every other veb port and the uplink.
// - vepa: everything the port sends goes to the uplink; the external switch
//   decides (hairpin is its job). Frames from the uplink are delivered by
//   destination MAC, also when they came from another of our ports.
// - private: the port reaches only the uplink, never another port, not even
//   through a hairpinning external switch.
import { isGroupMac, UNKNOWN, UPLINK, type MacTable } from './fdb.js';

export const VEB = 0;
export const VEPA = 1;
export const PRIVATE = 2;
export type PortModeName = 'veb' | 'vepa' | 'private';
export const MODE_NAMES: readonly PortModeName[] = ['veb', 'vepa', 'private'];

export function modeCode(name: string): number {
  const i = MODE_NAMES.indexOf(name as PortModeName);
  if (i < 0) throw new RangeError(`mode '${name}' is not one of ${MODE_NAMES.join(', ')}`);
  return i;
}

/** The ports a frame may go to: local ports (ids >= 0) with their modes, and whether an uplink exists. */
export class Topology {
  /** Local port ids in a stable order (flooding order). */
  ids: number[] = [];
  /** mode by port id; -1 for no such port. */
  private readonly modes: number[] = [];
  hasUplink = false;

  set(port: number, mode: number): void {
    if (!this.ids.includes(port)) this.ids.push(port);
    this.modes[port] = mode;
  }

  remove(port: number): void {
    this.ids = this.ids.filter((p) => p !== port);
    this.modes[port] = -1;
  }

  modeOf(port: number): number {
    const m = this.modes[port];
    return m === undefined ? -1 : m;
  }
}

/**
 * A frame that came in on the uplink with source `srcLocal` (a local port
 * owns that MAC: the frame is one of ours coming back) may reach `to` only if
 * neither end is private and one of them is vepa (a veb-to-veb frame was
 * already delivered locally; delivering its reflection would duplicate it).
 */
function hairpinAllowed(topo: Topology, srcLocal: number, to: number): boolean {
  if (srcLocal === to) return false;
  const a = topo.modeOf(srcLocal);
  const b = topo.modeOf(to);
  if (a === PRIVATE || b === PRIVATE) return false;
  return a === VEPA || b === VEPA;
}

/**
 * Fills `out` with the egress ports (local ids, or UPLINK) of a frame and
 * returns how many. `now` is the caller's clock (for ageing); learning the
 * source is the caller's job (before or after: the decision does not depend
 * on it, except for the uplink's hairpin check, which looks the source up).
 */
export function decide(fdb: MacTable, topo: Topology, ingress: number, dst: number, src: number, now: number, out: number[]): number {
  let n = 0;
  const group = isGroupMac(dst);
  if (ingress !== UPLINK) {
    const mode = topo.modeOf(ingress);
    if (mode < 0) return 0;
    if (mode !== VEB) {
      if (topo.hasUplink) out[n++] = UPLINK;
      return n;
    }
    const at = group ? UNKNOWN : fdb.lookup(dst, now);
    if (at === ingress) return 0; // filtered: the destination is behind the port it came from
    if (at === UPLINK) {
      if (topo.hasUplink) out[n++] = UPLINK;
      return n;
    }
    if (at !== UNKNOWN) {
      const m = topo.modeOf(at);
      if (m === VEB) out[n++] = at;
      else if (m >= 0 && topo.hasUplink) out[n++] = UPLINK; // reached only through the external switch
      else if (m < 0) return flood(topo, ingress, out);
      return n;
    }
    return flood(topo, ingress, out);
  }
  // From the uplink.
  const srcAt = fdb.lookup(src, now);
  const srcLocal = srcAt >= 0 ? srcAt : -1;
  const at = group ? UNKNOWN : fdb.lookup(dst, now);
  if (at === UPLINK) return 0;
  if (at >= 0) {
    if (topo.modeOf(at) >= 0 && (srcLocal < 0 || hairpinAllowed(topo, srcLocal, at))) out[n++] = at;
    return n;
  }
  for (const p of topo.ids) if (srcLocal < 0 || hairpinAllowed(topo, srcLocal, p)) out[n++] = p;
  return n;
}

/** Unknown or group destination from a veb port: every other veb port, and the uplink. */
function flood(topo: Topology, ingress: number, out: number[]): number {
  let n = 0;
  for (const p of topo.ids) if (p !== ingress && topo.modeOf(p) === VEB) out[n++] = p;
  if (topo.hasUplink) out[n++] = UPLINK;
  return n;
}
