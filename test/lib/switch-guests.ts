// Switch tests' view of a port: our test front-end as a guest with a MAC,
// sending Ethernet frames and collecting what the switch delivers to it.
import { VhostFrontend } from './vhost-frontend.js';

export const ETHERTYPE = 0x88b5; // IEEE local experimental: nothing else on the wire uses it

export function macBytes(mac: string): number[] {
  return mac.split(':').map((h) => parseInt(h, 16));
}

/** A 60-byte frame dst <- src carrying a tag string (at byte 14). */
export function ethFrame(dst: string, src: string, tag: string): Uint8Array {
  const f = new Uint8Array(60);
  f.set(macBytes(dst), 0);
  f.set(macBytes(src), 6);
  f[12] = ETHERTYPE >> 8;
  f[13] = ETHERTYPE & 0xff;
  f.set(Buffer.from(tag.slice(0, 40)), 14);
  return f;
}

/** The tag of one of our test frames, or null for anything else (the kernel's IPv6 chatter, ...). */
export function tagOf(f: Uint8Array): string | null {
  if (f.length < 60 || f[12] !== ETHERTYPE >> 8 || f[13] !== (ETHERTYPE & 0xff)) return null;
  const b = Buffer.from(f.subarray(14, 54));
  const end = b.indexOf(0);
  return b.subarray(0, end < 0 ? b.length : end).toString();
}

export class TestGuest {
  /** Tags of our frames received, in order. */
  readonly got: string[] = [];
  private constructor(readonly fe: VhostFrontend, readonly mac: string, readonly socket: string) {}

  static async connect(socket: string, mac: string): Promise<TestGuest> {
    const fe = await VhostFrontend.connectReady(socket, 10000);
    await fe.handshake({ memory: { name: `qnh-sw-${mac.slice(-2)}` } });
    return new TestGuest(fe, mac, socket);
  }

  async send(dst: string, tag: string): Promise<void> {
    await this.fe.transmit([ethFrame(dst, this.mac, tag)], 10000);
  }

  /** Moves what arrived into `got` and reposts buffers. */
  poll(): void {
    const rx = this.fe.rings[0]!;
    for (const f of rx.takeRx()) {
      const t = f ? tagOf(f) : null;
      if (t !== null) this.got.push(t);
    }
    if (rx.freeCount) rx.postRx();
  }

  /** Waits for a frame tagged `tag`; returns the tags received before it since `from`. */
  async waitTag(tag: string, timeoutMs = 10000): Promise<string[]> {
    await VhostFrontend.until(() => { this.poll(); return this.got.includes(tag); }, timeoutMs, () => `${this.mac} to receive '${tag}' (got ${JSON.stringify(this.got)})`);
    return this.got.slice(0, this.got.indexOf(tag));
  }

  close(): void { this.fe.close(); }
}
