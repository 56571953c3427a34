// The test front-end's socket: raw sends (any bytes, any fds), the reply
// framer, and request/reply/ack calls with timeouts; no guest state.
import { closeFd, SysError } from '../../src/sys/libc.js';
import { unwatch, watchReadable } from '../../src/sys/poller.js';
import { setNonBlocking } from '../../src/sys/unix-socket.js';
import * as F from './frontend-codec.js';
import { hasFeature, MessageReader, ProtoFeature, Req, reqName } from '../../src/vhost-user/protocol/index.js';
import { recvmsgFds, sendmsgFds } from './frontend-syscalls.js';

const MSG_DONTWAIT = 0x40;

export interface Reply {
  request: number;
  flags: number;
  payload: Uint8Array;
}

export type Event = { kind: 'reply'; reply: Reply } | { kind: 'closed' } | { kind: 'timeout' };

export class FrontendSocket {
  private readonly reader = new MessageReader('reply');
  private readonly rbuf = new Uint8Array(4096);
  private peerClosed = false;
  private closed = false;
  /** Why the peer was declared gone (EOF, ECONNRESET, EPIPE...). */
  closeReason = '';
  /** Protocol features negotiated: REPLY_ACK decides whether set() waits for an ack. */
  protocolFeatures = 0n;

  constructor(readonly fd: number) {
    // Non-blocking (libuv's poll handle would make it so anyway): receives
    // wait in the event loop, so an in-process back-end on the same loop keeps
    // running; send() falls back to a blocking sendmsg only when the socket
    // buffer is full.
    setNonBlocking(fd, true);
  }

  get replyAck(): boolean { return hasFeature(this.protocolFeatures, ProtoFeature.REPLY_ACK); }
  get isClosed(): boolean { return this.closed; }
  get isPeerClosed(): boolean { return this.peerClosed; }

  // ---- raw socket ----

  /**
   * Sends bytes with fds in one sendmsg (one message, or any garbage).
   * Returns false if the back-end has closed the connection.
   */
  send(bytes: Uint8Array, fds: readonly number[] = []): boolean {
    if (this.closed) throw new Error('front-end closed');
    try {
      try {
        sendmsgFds(this.fd, bytes, fds);
      } catch (e) {
        if (!(e instanceof SysError && (e.code === 'EAGAIN' || e.code === 'EWOULDBLOCK'))) throw e;
        // libuv's poll handle (waitReadable) turned O_NONBLOCK back on, and
        // the back-end is not keeping up (a flood): wait for room. Only
        // floods get here; against an in-process back-end this would block
        // its event loop, so in-process tests do not flood.
        setNonBlocking(this.fd, false);
        try { sendmsgFds(this.fd, bytes, fds); } finally { setNonBlocking(this.fd, true); }
      }
      return true;
    } catch (e) {
      if (e instanceof SysError && (e.code === 'EPIPE' || e.code === 'ECONNRESET')) {
        this.markPeerClosed(e.code);
        return false;
      }
      throw e;
    }
  }

  /** Encodes and sends one request (NEED_REPLY if asked). */
  request(req: number, payload: Uint8Array = new Uint8Array(0), fds: readonly number[] = [], needReply = false): boolean {
    return this.send(F.encodeRequest(req, payload, { needReply }), fds);
  }

  private markPeerClosed(why: string): void {
    if (!this.peerClosed) {
      this.peerClosed = true;
      this.closeReason = why;
    }
  }

  /** Reads whatever is queued on the socket into the reply framer. */
  private drain(): void {
    while (!this.peerClosed) {
      let n: number;
      let fds: number[];
      try {
        ({ n, fds } = recvmsgFds(this.fd, this.rbuf, MSG_DONTWAIT));
      } catch (e) {
        if (e instanceof SysError && (e.code === 'EAGAIN' || e.code === 'EWOULDBLOCK')) return;
        if (e instanceof SysError && e.code === 'EINTR') continue;
        if (e instanceof SysError && e.code === 'ECONNRESET') { this.markPeerClosed('ECONNRESET'); return; }
        throw e;
      }
      if (fds.length) {
        fds.forEach(closeFd);
        throw new Error(`back-end sent ${fds.length} fd(s) on the front-end socket`);
      }
      if (n === 0) { this.markPeerClosed('EOF'); return; }
      // A malformed reply throws here: the back-end broke the protocol.
      this.reader.push(this.rbuf.subarray(0, n));
    }
  }

  private waitReadable(ms: number): Promise<void> {
    return new Promise((resolve) => {
      let done = false;
      const finish = (): void => {
        if (done) return;
        done = true;
        clearTimeout(t);
        unwatch(this.fd);
        resolve();
      };
      const t = setTimeout(finish, ms);
      if (!watchReadable(this.fd, finish)) finish();
    });
  }

  /** The next reply, EOF, or a timeout. Replies already received come first. */
  async next(timeoutMs = 2000): Promise<Event> {
    const deadline = Date.now() + timeoutMs;
    for (;;) {
      this.drain();
      const m = this.reader.next();
      if (m) return { kind: 'reply', reply: { request: m.request, flags: m.flags, payload: m.payload } };
      if (this.peerClosed) {
        if (this.reader.midMessage) throw new Error('back-end closed in the middle of a reply');
        return { kind: 'closed' };
      }
      const left = deadline - Date.now();
      if (left <= 0) return { kind: 'timeout' };
      await this.waitReadable(left);
    }
  }

  /** The next reply, which must be for `req`; throws on EOF or timeout. */
  async expectReply(req?: number, timeoutMs = 2000): Promise<Reply> {
    const ev = await this.next(timeoutMs);
    if (ev.kind === 'closed') throw new Error(`back-end closed the connection (${this.closeReason}) instead of replying to ${req === undefined ? 'a request' : reqName(req)}`);
    if (ev.kind === 'timeout') throw new Error(`no reply to ${req === undefined ? 'a request' : reqName(req)} within ${timeoutMs} ms`);
    if (req !== undefined && ev.reply.request !== req) throw new Error(`expected a ${reqName(req)} reply, got ${reqName(ev.reply.request)}`);
    return ev.reply;
  }

  /** Succeeds once the back-end has closed the connection; throws if it replies or hangs. */
  async expectClosed(timeoutMs = 2000): Promise<void> {
    const ev = await this.next(timeoutMs);
    if (ev.kind === 'reply') throw new Error(`expected the back-end to close, got a ${reqName(ev.reply.request)} reply ${Buffer.from(ev.reply.payload).toString('hex')}`);
    if (ev.kind === 'timeout') throw new Error(`back-end neither replied nor closed within ${timeoutMs} ms`);
  }

  /** Sends an always-reply request (GET_*) and returns its reply. */
  async call(req: number, payload?: Uint8Array, fds: readonly number[] = []): Promise<Reply> {
    if (!this.request(req, payload, fds)) throw new Error(`back-end closed before ${reqName(req)}`);
    return this.expectReply(req);
  }

  async callU64(req: number, payload?: Uint8Array): Promise<bigint> {
    return F.replyU64(await this.call(req, payload));
  }

  /** Sends with NEED_REPLY and returns the REPLY_ACK value (0 = ok). */
  async ack(req: number, payload?: Uint8Array, fds: readonly number[] = []): Promise<bigint> {
    if (!this.request(req, payload, fds, true)) throw new Error(`back-end closed before ${reqName(req)}`);
    return F.replyU64(await this.expectReply(req));
  }

  /**
   * A set-request in the handshake: acknowledged (and checked) when REPLY_ACK
   * is negotiated, fire-and-forget otherwise.
   */
  async set(req: number, payload?: Uint8Array, fds: readonly number[] = []): Promise<void> {
    if (this.replyAck) {
      const v = await this.ack(req, payload, fds);
      if (v !== 0n) throw new Error(`${reqName(req)} refused: ack ${v}`);
    } else if (!this.request(req, payload, fds)) {
      throw new Error(`back-end closed before ${reqName(req)}`);
    }
  }

  /** Every earlier message has been handled once this resolves (replies are in order). */
  async barrier(): Promise<void> {
    await this.call(Req.GET_FEATURES);
  }

  /** Closes the socket and any fds a partial reply carried. */
  close(): void {
    if (this.closed) return;
    this.closed = true;
    unwatch(this.fd);
    closeFd(this.fd);
    for (const fd of this.reader.drainFds()) closeFd(fd);
  }
}
