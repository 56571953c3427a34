// Streaming framer: turns recvmsg chunks (bytes + SCM_RIGHTS fds) into whole
// messages. Pure, no I/O. Memory use is bounded by the header cap: a header is
// validated the moment its 12th byte arrives, before any payload buffer exists.
import { HEADER_SIZE, MAX_FDS_PER_MESSAGE, ProtocolError } from './messages.js';
import { type Direction, decodeHeader } from './codec.js';
import { EMPTY } from './wire.js';

/** One framed message. Its fds now belong to whoever pulled it. */
export interface RawMessage {
  request: number;
  flags: number;
  /** A private copy (never a view of a pushed chunk), so recv buffers can be reused. */
  payload: Uint8Array;
  fds: readonly number[];
}

const NO_FDS: readonly number[] = Object.freeze([]);

/** A message between its first header byte and its last payload byte. */
interface Partial {
  msg: RawMessage;
  /** Payload bytes received so far; -1 while the header is incomplete. */
  fill: number;
}

/**
 * Which message gets a chunk's fds. QEMU (and DPDK, rust-vmm) send each
 * message with one sendmsg, fds attached, so the kernel ties the fds to the
 * skb that begins with that message's header. An AF_UNIX stream recvmsg hands
 * the fds over when it first reads from that skb, and then stops reading
 * (unix_stream_read_generic breaks after an skb with fds). So in one chunk the
 * fd-carrying message is the LAST one whose header starts in the chunk; earlier
 * messages in the same chunk were fd-less ones queued before it.
 *
 * Usage: `push()` each chunk, then call `next()` until it returns undefined.
 * On ProtocolError, close the connection and close every fd from `drainFds()`.
 */
export class MessageReader {
  private readonly hdr = new Uint8Array(HEADER_SIZE);
  /** Header bytes staged in `hdr` when a header straddles chunks. */
  private hdrFill = 0;
  private cur: Partial | null = null;
  private readonly queue: RawMessage[] = [];
  private head = 0;
  private failure: ProtocolError | null = null;
  /** fds orphaned by a failure, waiting for drainFds(). */
  private orphans: number[] = [];

  constructor(private readonly direction: Direction = 'request') {}

  /**
   * Feed one chunk as returned by recvmsg. Takes ownership of `fds` even when
   * it throws: after a ProtocolError the reader is dead (every later push
   * throws the same error) and `drainFds()` returns all fds it still holds.
   */
  push(bytes: Uint8Array, fds: readonly number[] = NO_FDS): void {
    if (this.failure) {
      this.orphans.push(...fds);
      throw this.failure;
    }
    let lastStarted: RawMessage | null = null;
    try {
      if (fds.length > MAX_FDS_PER_MESSAGE) {
        throw new ProtocolError('fds', `${fds.length} fds in one chunk, at most ${MAX_FDS_PER_MESSAGE} allowed`);
      }
      let pos = 0;
      while (pos < bytes.length) {
        let cur = this.cur;
        if (cur === null) {
          cur = this.cur = { msg: { request: 0, flags: 0, payload: EMPTY, fds: NO_FDS }, fill: -1 };
          lastStarted = cur.msg;
          this.hdrFill = 0;
        }
        if (cur.fill < 0) {
          pos = this.takeHeaderBytes(bytes, pos, cur);
          continue;
        }
        const want = cur.msg.payload.length - cur.fill;
        const n = Math.min(want, bytes.length - pos);
        cur.msg.payload.set(bytes.subarray(pos, pos + n), cur.fill);
        cur.fill += n;
        pos += n;
        if (cur.fill === cur.msg.payload.length) this.finish();
      }
      if (fds.length > 0) {
        if (lastStarted === null) {
          throw new ProtocolError('fds', `${fds.length} fd(s) arrived with bytes that start no message`);
        }
        lastStarted.fds = fds.slice();
      }
    } catch (e) {
      // Nothing can throw after the fds are attached, so they are still ours here.
      this.fail(e, fds);
      throw e;
    }
  }

  private takeHeaderBytes(bytes: Uint8Array, pos: number, cur: Partial): number {
    const rest = bytes.length - pos;
    if (this.hdrFill === 0 && rest >= HEADER_SIZE) {
      // Common case: whole header inside the chunk, decode it in place.
      this.startPayload(decodeHeader(bytes, pos, this.direction), cur);
      return pos + HEADER_SIZE;
    }
    const n = Math.min(HEADER_SIZE - this.hdrFill, rest);
    this.hdr.set(bytes.subarray(pos, pos + n), this.hdrFill);
    this.hdrFill += n;
    if (this.hdrFill === HEADER_SIZE) this.startPayload(decodeHeader(this.hdr, 0, this.direction), cur);
    return pos + n;
  }

  private startPayload(h: { request: number; flags: number; size: number }, cur: Partial): void {
    cur.msg.request = h.request;
    cur.msg.flags = h.flags;
    // Safe to allocate: decodeHeader capped size at MAX_PAYLOAD_SIZE.
    cur.msg.payload = h.size === 0 ? EMPTY : new Uint8Array(h.size);
    cur.fill = 0;
    if (h.size === 0) this.finish();
  }

  private finish(): void {
    this.queue.push(this.cur!.msg);
    this.cur = null;
  }

  private fail(e: unknown, unattached: readonly number[]): void {
    this.failure = e instanceof ProtocolError ? e : new ProtocolError('value', `framer failed: ${String(e)}`);
    this.orphans.push(...unattached);
    for (let i = this.head; i < this.queue.length; i++) this.orphans.push(...this.queue[i]!.fds);
    if (this.cur) this.orphans.push(...this.cur.msg.fds);
    this.queue.length = 0;
    this.head = 0;
    this.cur = null;
  }

  /** The next complete message, or undefined. Nothing after a failure. */
  next(): RawMessage | undefined {
    if (this.head === this.queue.length) return undefined;
    const m = this.queue[this.head]!;
    this.queue[this.head++] = undefined as unknown as RawMessage; // let it be collected
    if (this.head === this.queue.length) {
      this.queue.length = 0;
      this.head = 0;
    }
    return m;
  }

  /** Complete messages waiting for next(). */
  get pending(): number {
    return this.queue.length - this.head;
  }

  /** True while part of a message has been received (a clean EOF has none). */
  get midMessage(): boolean {
    return this.cur !== null;
  }

  /** The error that killed this reader, if any. */
  get error(): ProtocolError | null {
    return this.failure;
  }

  /**
   * Hand over, and forget, every fd the reader holds: those of queued and
   * partial messages, and those orphaned by a failure. Call it when closing
   * the connection (failure or EOF) and close each one.
   */
  drainFds(): number[] {
    const out = this.orphans;
    this.orphans = [];
    for (let i = this.head; i < this.queue.length; i++) {
      out.push(...this.queue[i]!.fds);
      this.queue[i]!.fds = NO_FDS;
    }
    if (this.cur) {
      out.push(...this.cur.msg.fds);
      this.cur.msg.fds = NO_FDS;
    }
    return out;
  }
}
