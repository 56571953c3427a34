// The switch's MAC table (forwarding database): which port a source MAC was
// last seen on, aged out after `ageMs` without traffic. Pure: the caller
// passes the clock, so ageing is unit-testable without waiting.
//
// MACs are 48-bit numbers (exact in a double), so a lookup is one Map.get on
// the hot path, with no string building per frame.

/** The uplink's port id in the table (local ports are 0, 1, ...). */
export const UPLINK = -1;
/** lookup(): no (live) entry. */
export const UNKNOWN = -2;

const DEFAULT_AGE_MS = 300_000; // as Linux bridges and OVS
const DEFAULT_MAX_ENTRIES = 8192;

export type LearnResult = 'new' | 'moved' | 'refreshed' | 'full' | 'ignored';

interface Entry { port: number; seen: number }

/** The 6 bytes at `off` as a number. */
export function macAt(b: Uint8Array, off: number): number {
  return b[off]! * 0x10000000000 + b[off + 1]! * 0x100000000 + ((b[off + 2]! << 24) >>> 0) + (b[off + 3]! << 16) + (b[off + 4]! << 8) + b[off + 5]!;
}

/** Group bit (bit 0 of the first byte): broadcast and multicast. */
export function isGroupMac(mac: number): boolean {
  return Math.floor(mac / 0x10000000000) % 2 === 1;
}

export function macToString(mac: number): string {
  return mac.toString(16).padStart(12, '0').replace(/(..)(?!$)/g, '$1:');
}

export function parseMac(s: string): number | null {
  if (!/^[0-9a-fA-F]{2}(:[0-9a-fA-F]{2}){5}$/.test(s)) return null;
  return parseInt(s.replace(/:/g, ''), 16);
}

export class MacTable {
  private readonly map = new Map<number, Entry>();
  /** Bumped whenever an entry appears, moves or goes: callers caching a decision compare it. */
  gen = 0;
  constructor(readonly ageMs = DEFAULT_AGE_MS, readonly maxEntries = DEFAULT_MAX_ENTRIES) {}

  get size(): number { return this.map.size; }

  /**
   * Records that `mac` was seen as a source on `port`. Group MACs are never
   * learned. A MAC a local port owns is not moved to the uplink while fresh:
   * an external switch hairpinning (VEPA) or looping our own frames back would
   * otherwise steal it; it moves when the entry ages or the port goes away.
   * A full table learns nothing new (a guest spraying source MACs cannot
   * evict the others): unknown destinations are flooded instead.
   */
  learn(mac: number, port: number, now: number): LearnResult {
    if (isGroupMac(mac) || mac === 0) return 'ignored';
    const e = this.map.get(mac);
    if (e !== undefined) {
      const fresh = now - e.seen < this.ageMs;
      if (e.port === port) { e.seen = now; return 'refreshed'; }
      if (fresh && port === UPLINK && e.port !== UPLINK) return 'ignored';
      e.port = port;
      e.seen = now;
      this.gen++;
      return 'moved';
    }
    if (this.map.size >= this.maxEntries) return 'full';
    this.map.set(mac, { port, seen: now });
    this.gen++;
    return 'new';
  }

  /** The port `mac` lives on, or UNKNOWN (never learned, or aged out). */
  lookup(mac: number, now: number): number {
    const e = this.map.get(mac);
    if (e === undefined) return UNKNOWN;
    if (now - e.seen >= this.ageMs) {
      this.map.delete(mac);
      this.gen++;
      return UNKNOWN;
    }
    return e.port;
  }

  /** Removes aged entries; returns how many. */
  sweep(now: number): number {
    let n = 0;
    for (const [mac, e] of this.map) if (now - e.seen >= this.ageMs) { this.map.delete(mac); n++; }
    if (n) this.gen++;
    return n;
  }

  /** Forgets everything learned on `port` (it went away or reconnected). */
  flushPort(port: number): number {
    let n = 0;
    for (const [mac, e] of this.map) if (e.port === port) { this.map.delete(mac); n++; }
    if (n) this.gen++;
    return n;
  }

  entries(now: number): { mac: string; port: number; ageMs: number }[] {
    const out: { mac: string; port: number; ageMs: number }[] = [];
    for (const [mac, e] of this.map) if (now - e.seen < this.ageMs) out.push({ mac: macToString(mac), port: e.port, ageMs: now - e.seen });
    return out;
  }
}
