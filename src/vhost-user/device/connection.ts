// One vhost-user connection: recvmsg with fds, framing, one request at a
// time through the device, replies. A protocol violation or a failure that
// cannot be reported (no REPLY_ACK) closes the connection; it never throws
// out of here, so one hostile front-end cannot disturb other ports.
import { closeFd, SysError } from '../../sys/libc.js';
import { unwatch, watchReadable } from '../../sys/poller.js';
import { recvWithFds, sendWithFds } from '../../sys/unix-fd.js';
import { decodeRequest, MessageReader, ProtocolError, reqName, type RawMessage } from '../protocol/index.js';
import { DeviceError, type VhostUserNetDevice } from './device.js';

const MSG_DONTWAIT = 0x40;
// Messages read ahead of the one being handled. Past this we stop reading the
// socket until the backlog is handled: a flooding front-end must not make us
// hold thousands of its fds, and its kernel socket buffer then fills instead.
const MAX_QUEUED = 32;

export class Connection {
  private readonly reader = new MessageReader();
  private readonly buf = new Uint8Array(4096);
  private readonly queue: RawMessage[] = [];
  private busy = false;
  private closed = false;
  private paused = false;
  readonly done: Promise<string>;
  private finish!: (why: string) => void;

  constructor(readonly fd: number, private readonly device: VhostUserNetDevice, private readonly log: (msg: string, level?: 'warn') => void) {
    this.done = new Promise((res) => { this.finish = res; });
  }

  start(): void {
    if (!watchReadable(this.fd, () => this.onReadable())) this.close('socket is not open');
  }

  private onReadable(): void {
    if (this.closed) return;
    for (;;) {
      if (this.queue.length >= MAX_QUEUED) {
        unwatch(this.fd);
        this.paused = true;
        break;
      }
      let n: number;
      let fds: number[];
      try {
        ({ n, fds } = recvWithFds(this.fd, this.buf, 0, this.buf.length, MSG_DONTWAIT));
      } catch (e) {
        if (e instanceof SysError && (e.code === 'EAGAIN' || e.code === 'EWOULDBLOCK')) break;
        if (e instanceof SysError && e.code === 'EINTR') continue;
        this.close(`recvmsg failed: ${(e as Error).message}`);
        return;
      }
      if (n === 0) {
        fds.forEach(closeFd);
        this.close('front-end closed the connection');
        return;
      }
      try {
        this.reader.push(this.buf.subarray(0, n), fds);
        for (let m = this.reader.next(); m; m = this.reader.next()) this.queue.push(m);
      } catch (e) {
        this.close(`protocol error: ${(e as Error).message}`);
        return;
      }
    }
    void this.process();
  }

  private async process(): Promise<void> {
    if (this.busy) return;
    this.busy = true;
    try {
      while (!this.closed && this.queue.length) {
        const raw = this.queue.shift()!;
        await this.handleOne(raw);
        if (this.paused && !this.closed && this.queue.length < MAX_QUEUED / 2) {
          this.paused = false;
          this.start();
        }
      }
    } finally {
      this.busy = false;
    }
  }

  private async handleOne(raw: RawMessage): Promise<void> {
    let req;
    try {
      req = decodeRequest(raw.request, raw.flags, raw.payload, raw.fds);
    } catch (e) {
      raw.fds.forEach(closeFd);
      this.close(e instanceof ProtocolError ? `protocol error: ${e.message}` : `decode failed: ${(e as Error).message}`);
      return;
    }
    try {
      const reply = await this.device.handle(req);
      if (reply) this.send(reply);
      else {
        const ack = this.device.ack(req, true, raw.request);
        if (ack) this.send(ack);
      }
    } catch (e) {
      // The device owns a request's fds once handle() has it: it closes
      // them itself on refusal or keeps them (closing here too could close a
      // reused fd number).
      const msg = e instanceof Error ? e.message : String(e);
      const ack = e instanceof DeviceError && !e.fatal ? this.device.ack(req, false, raw.request) : null;
      if (ack) {
        this.log(`${reqName(raw.request)} refused: ${msg}`, 'warn');
        this.send(ack);
      } else {
        this.close(`${reqName(raw.request)} failed: ${msg}`);
      }
    }
  }

  private send(bytes: Uint8Array): void {
    if (this.closed) return;
    try {
      sendWithFds(this.fd, bytes, []);
    } catch (e) {
      this.close(`sending a reply failed: ${(e as Error).message}`);
    }
  }

  close(why: string): void {
    if (this.closed) return;
    this.closed = true;
    unwatch(this.fd);
    closeFd(this.fd);
    for (const m of this.queue.splice(0)) m.fds.forEach(closeFd);
    // fds of a message whose payload never arrived, or orphaned by a failure.
    this.reader.drainFds().forEach(closeFd);
    this.log(`connection closed: ${why}`);
    void this.device.close().catch((e) => this.log(`releasing the device failed: ${(e as Error).message}`, 'warn')).finally(() => this.finish(why));
  }
}
