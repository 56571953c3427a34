// Our own vhost-user front-end: a test driver (as rust-vmm keeps one) that
// plays the part of QEMU or DPDK virtio-user against the back-end, in-process
// over a socketpair or against the real `vhost-user serve` over its socket.
// It owns a memfd-backed "guest memory", drives split rings in it from the
// guest side (reusing mock-driver's MockVirtq), and exposes the raw socket so
// hostile tests can send anything at all. Test code: helpers throw freely.
import { existsSync, fstatSync, readdirSync, readFileSync, readlinkSync } from 'node:fs';
import { addressOf, c, check, closeFd, koffi, SysError } from '../../src/sys/libc.js';
import { mapShared, unmap, type Mapping } from '../../src/sys/mmap.js';
import { eventfdDrain, eventfdSignal } from '../../src/sys/eventfd.js';
import { unwatch, watchReadable } from '../../src/sys/poller.js';
import { connectUnix, setNonBlocking } from '../../src/sys/unix-socket.js';
import * as F from './frontend-codec.js';
import {
  Feature, featureBit, hasFeature, MessageReader, ProtoFeature, Req, reqName, type MemRegion,
} from '../../src/vhost-user/protocol/index.js';
import { MockVirtq, VIRTQ_DESC_F_WRITE, type MockGuest } from './mock-driver.js';

// ---- libc bits the project does not bind ---------------------------------

const libc = koffi.load('libc.so.6');
const memfdCreateRaw = libc.func('int memfd_create(const char *name, unsigned int flags)');
const ftruncateRaw = libc.func('int ftruncate(int fd, int64_t len)');
const pipe2Raw = libc.func('int pipe2(_Out_ int *fds, int flags)');
const eventfdRaw = libc.func('int eventfd(unsigned int initval, int flags)');
const dupRaw = libc.func('int dup(int fd)');
const MFD_CLOEXEC = 1;
const MFD_ALLOW_SEALING = 2;
const O_CLOEXEC = 0o2000000;
const EFD_NONBLOCK = 0o4000;
const EFD_CLOEXEC = 0o2000000;
const MSG_DONTWAIT = 0x40;

/**
 * A memfd of `size` bytes. `sealable` (default): created with
 * MFD_ALLOW_SEALING, as QEMU does (the back-end seals it against shrinking);
 * false: as DPDK's --no-huge memory, which nobody can ever seal.
 */
export function memfdCreate(name: string, size: number, sealable = true): number {
  const fd = check(memfdCreateRaw(name, MFD_CLOEXEC | (sealable ? MFD_ALLOW_SEALING : 0)), 'memfd_create');
  try {
    check(ftruncateRaw(fd, size), 'ftruncate');
  } catch (e) {
    closeFd(fd);
    throw e;
  }
  return fd;
}

export function ftruncate(fd: number, size: number): void {
  check(ftruncateRaw(fd, size), 'ftruncate');
}

/**
 * [read end, write end]; blocking unless asked (O_NONBLOCK lives in the open
 * file description the receiver shares: the sender chooses it).
 */
export function pipe(nonBlocking = false): [number, number] {
  const fds = [0, 0];
  check(pipe2Raw(fds, O_CLOEXEC | (nonBlocking ? 0o4000 : 0)), 'pipe2');
  return [fds[0]!, fds[1]!];
}

/**
 * An eventfd. `blocking` and `initial` let a hostile test hand over one whose
 * write blocks (counter at its maximum), which the back-end cannot tell apart
 * from a normal call fd.
 */
export function makeEventfd(opts: { blocking?: boolean; initial?: number } = {}): number {
  return check(eventfdRaw(opts.initial ?? 0, EFD_CLOEXEC | (opts.blocking ? 0 : EFD_NONBLOCK)), 'eventfd');
}

export function dup(fd: number): number {
  return check(dupRaw(fd), 'dup');
}

/** Writes a raw u64 into an eventfd (e.g. 0xfffffffffffffffe: the next +1 blocks). */
export function eventfdAdd(fd: number, value: bigint): void {
  const b = Buffer.alloc(8);
  b.writeBigUInt64LE(value);
  check(c.write(fd, b, 8), 'write', 'eventfd');
}

// ---- sendmsg/recvmsg that keep their buffers alive ------------------------
//
// Deliberately not src/sys/unix-fd.ts's sendWithFds/recvWithFds: the driver
// must not share the transport code under test. (Those once let the iovec be
// garbage-collected before the syscall read it, fixed in dc405cb; sends then
// failed with EFAULT or sent garbage under GC pressure from large mappings
// such as our guest memory.) One long-lived scratch block holds msghdr,
// iovec and control, and the data buffer is used after the call.

const SCM_RIGHTS = 1;
const SOL_SOCKET = 1;
const MSG_NOSIGNAL = 0x4000;
const MSG_CMSG_CLOEXEC = 0x40000000;
const MAX_FDS = 64;
// msghdr at 0 (56 bytes), iovec at 64 (16), control at 128 (16 + 4 x MAX_FDS).
const scratch = Buffer.alloc(128 + 16 + 4 * MAX_FDS);
const scratchAddr = addressOf(scratch);

function prepare(data: Uint8Array, controlLen: number): void {
  scratch.fill(0, 0, 128);
  scratch.writeBigUInt64LE(addressOf(data), 64);
  scratch.writeBigUInt64LE(BigInt(data.length), 72);
  scratch.writeBigUInt64LE(scratchAddr + 64n, 16);
  scratch.writeBigUInt64LE(1n, 24);
  if (controlLen) {
    scratch.writeBigUInt64LE(scratchAddr + 128n, 32);
    scratch.writeBigUInt64LE(BigInt(controlLen), 40);
  }
}

/** One sendmsg of `data` with `fds` attached (SCM_RIGHTS). Throws SysError. */
export function sendmsgFds(sock: number, data: Uint8Array, fds: readonly number[]): number {
  if (fds.length > MAX_FDS) throw new RangeError(`at most ${MAX_FDS} fds`);
  const len = 16 + 4 * fds.length;
  const controlLen = fds.length ? (len + 7) & ~7 : 0;
  prepare(data, controlLen);
  if (fds.length) {
    scratch.fill(0, 128, 128 + controlLen);
    scratch.writeBigUInt64LE(BigInt(len), 128);
    scratch.writeInt32LE(SOL_SOCKET, 136);
    scratch.writeInt32LE(SCM_RIGHTS, 140);
    fds.forEach((fd, i) => scratch.writeInt32LE(fd, 144 + 4 * i));
  }
  const n = check(c.sendmsg(sock, scratch, MSG_NOSIGNAL), 'sendmsg');
  // `data` is used after the call so it cannot be collected during it.
  if (n > data.length) throw new Error('sendmsg sent more than it was given');
  return n;
}

/** One recvmsg into `buf`; received fds are close-on-exec. Throws SysError (EAGAIN included). */
export function recvmsgFds(sock: number, buf: Uint8Array, flags = 0): { n: number; fds: number[] } {
  const controlLen = 16 + 4 * MAX_FDS;
  prepare(buf, controlLen);
  const n = check(c.recvmsg(sock, scratch, flags | MSG_CMSG_CLOEXEC), 'recvmsg');
  if (n > buf.length) throw new Error('recvmsg returned more than the buffer holds');
  const got = Number(scratch.readBigUInt64LE(40));
  const fds: number[] = [];
  for (let p = 128; p + 16 <= 128 + got;) {
    const clen = Number(scratch.readBigUInt64LE(p));
    if (clen < 16) break;
    if (scratch.readInt32LE(p + 8) === SOL_SOCKET && scratch.readInt32LE(p + 12) === SCM_RIGHTS) {
      for (let q = p + 16; q + 4 <= p + clen; q += 4) fds.push(scratch.readInt32LE(q));
    }
    p += (clen + 7) & ~7;
  }
  return { n, fds };
}

export const sleep = (ms: number): Promise<void> => new Promise((r) => setTimeout(r, ms));

// ---- guest memory ---------------------------------------------------------

export const PAGE = 4096;

export interface GuestMemoryOptions {
  /** Bytes of the memfd (default 4 MiB). */
  size?: number;
  /** Guest-physical address of byte 0 (default 1 GiB: not 0, so gpa/offset mix-ups show). */
  gpaBase?: number;
  /**
   * Front-end virtual address of byte 0. Deliberately unrelated to the real
   * mapping address and to gpaBase: the back-end must only translate it.
   */
  uaBase?: number;
  /**
   * 2: the memfd is announced as two regions (the second half with a
   * non-zero mmap_offset and a user address that is not contiguous), as
   * QEMU does for memory split around a hole.
   */
  regions?: 1 | 2;
  /** memfd name, visible in /proc/PID/maps of whoever maps it. */
  name?: string;
  /** false: a memfd nobody can seal (as DPDK --no-huge makes); default sealable, like QEMU's. */
  sealable?: boolean;
  /**
   * Use the mapping's real address as uaBase (vhost-net reads our memory
   * through our own address space, so addresses must be true ones).
   */
  realAddresses?: boolean;
}

/**
 * A memfd mapped into this process, announced to the back-end as guest
 * memory. It duck-types the few MockGuest members MockVirtq uses (buffer, dv,
 * host, uaOf), so the mock driver's ring code runs over shared memory that
 * the back-end maps too.
 */
export class GuestMemfd {
  readonly fd: number;
  readonly size: number;
  readonly gpaBase: number;
  readonly uaBase: number;
  readonly name: string;
  private readonly map: Mapping;
  readonly buffer: ArrayBuffer;
  readonly u8: Uint8Array;
  readonly dv: DataView;
  private readonly split: number;
  private readonly ua2: number;

  constructor(opts: GuestMemoryOptions = {}) {
    this.size = opts.size ?? 4 << 20;
    this.gpaBase = opts.gpaBase ?? 0x4000_0000;
    this.uaBase = opts.uaBase ?? 0x7f12_3400_0000;
    this.name = opts.name ?? 'qnh-guest';
    this.fd = memfdCreate(this.name, this.size, opts.sealable ?? true);
    this.map = mapShared(this.fd, this.size);
    if (opts.realAddresses) this.uaBase = Number(koffi.address(this.map.ptr));
    this.buffer = this.map.buffer;
    this.u8 = new Uint8Array(this.buffer);
    this.dv = new DataView(this.buffer);
    this.split = opts.regions === 2 ? this.size / 2 : this.size;
    this.ua2 = this.uaBase + this.split + 0x1000_0000;
  }

  /** The memory table to announce (one fd per region: `fds()`). */
  regions(): MemRegion[] {
    const r: MemRegion[] = [{
      guestPhysAddr: BigInt(this.gpaBase), memorySize: BigInt(this.split), userspaceAddr: BigInt(this.uaBase), mmapOffset: 0n,
    }];
    if (this.split < this.size) {
      r.push({
        guestPhysAddr: BigInt(this.gpaBase + this.split), memorySize: BigInt(this.size - this.split),
        userspaceAddr: BigInt(this.ua2), mmapOffset: BigInt(this.split),
      });
    }
    return r;
  }

  fds(): number[] {
    return this.regions().map(() => this.fd);
  }

  /**
   * Offset in the mapping of [gpa, gpa+len); throws outside guest memory, and
   * after close(): the views then point at unmapped memory, and a polling
   * loop a test abandoned must get an exception, not SIGSEGV the test runner.
   */
  host(gpa: number, len = 1): number {
    if (this.unmapped) throw new Error(`guest memory ${this.name} is closed`);
    const off = gpa - this.gpaBase;
    if (!(off >= 0 && off + len <= this.size)) throw new RangeError(`gpa 0x${gpa.toString(16)}+${len} outside guest memory`);
    return off;
  }

  uaOf(gpa: number): number {
    const off = this.host(gpa);
    return off < this.split ? this.uaBase + off : this.ua2 + off - this.split;
  }

  write(gpa: number, data: Uint8Array): void {
    this.u8.set(data, this.host(gpa, data.length));
  }

  read(gpa: number, len: number): Uint8Array {
    const h = this.host(gpa, len);
    return this.u8.slice(h, h + len);
  }

  /** A split-ring descriptor at `gpa` (direct table slot or indirect table entry); `addr` may exceed 2^53. */
  writeDesc(gpa: number, addr: number | bigint, len: number, flags: number, next: number): void {
    const h = this.host(gpa, 16);
    this.dv.setBigUint64(h, BigInt.asUintN(64, BigInt(addr)), true);
    this.dv.setUint32(h + 8, len >>> 0, true);
    this.dv.setUint16(h + 12, flags, true);
    this.dv.setUint16(h + 14, next, true);
  }

  private unmapped = false;

  close(): void {
    if (this.unmapped) return;
    this.unmapped = true;
    unmap(this.map);
    closeFd(this.fd);
  }
}

// ---- guest-side rings -------------------------------------------------------

export const NET_HDR = 12;
export const BUF_SIZE = 2048;

/** Where things live in guest memory (offsets from gpaBase). */
export const LAYOUT = {
  /** Ring i's descriptor table; avail and used follow (MockVirtq.at). */
  ring: (i: number): number => i * 0x10000,
  /** Ring i's packet buffers (BUF_SIZE each, one per descriptor id). */
  buffers: (i: number, size: number): number => (1 << 20) + i * size * BUF_SIZE,
  /** Free for hostile tests (indirect tables, odd buffers): [2 MiB, end). */
  scratch: 2 << 20,
} as const;

/**
 * One split ring driven from the guest side. Chains use descriptor id k with
 * buffer k (so no allocation map is needed); raw access to the MockVirtq lets
 * hostile tests write anything.
 */
export class GuestRing {
  readonly q: MockVirtq;
  readonly kickFd: number;
  readonly callFd: number;
  private readonly free: number[] = [];
  /** Descriptor ids currently owned by the device. */
  readonly outstanding = new Set<number>();

  constructor(readonly g: GuestMemfd, readonly index: number, readonly size: number) {
    // MockVirtq only touches buffer/dv/host/uaOf, which GuestMemfd provides
    // over the shared mapping (MockGuest's private fields make the cast needed).
    this.q = MockVirtq.at(g as unknown as MockGuest, size, g.gpaBase + LAYOUT.ring(index));
    for (let i = size - 1; i >= 0; i--) this.free.push(i);
    this.kickFd = makeEventfd();
    this.callFd = makeEventfd();
  }

  get isRx(): boolean { return (this.index & 1) === 0; }

  /** Withdraws n descriptor ids from this ring's allocator, for chains a test builds by hand. */
  take(n: number): number[] {
    if (n > this.free.length) throw new Error(`ring ${this.index}: only ${this.free.length} free descriptors`);
    return this.free.splice(this.free.length - n, n).reverse();
  }
  bufGpa(id: number): number { return this.g.gpaBase + LAYOUT.buffers(this.index, this.size) + id * BUF_SIZE; }
  get freeCount(): number { return this.free.length; }

  addr(): F.VringAddr {
    return { index: this.index, desc: BigInt(this.q.descUA), used: BigInt(this.q.usedUA), avail: BigInt(this.q.availUA) };
  }

  kick(): void { eventfdSignal(this.kickFd); }
  /** Kicks the back-end has not consumed yet (peeks: read, then write back). */
  kickPending(): number {
    const n = eventfdDrain(this.kickFd);
    if (n) eventfdAdd(this.kickFd, BigInt(n));
    return n;
  }
  /** Calls (interrupts) the back-end signalled since the last look. */
  calls(): number { return eventfdDrain(this.callFd); }

  /** RX: posts up to n device-writable buffers (default: every free one). */
  postRx(n = this.free.length): number {
    let k = 0;
    for (; k < n && this.free.length; k++) {
      const id = this.free.pop()!;
      this.q.setDesc(id, this.bufGpa(id), BUF_SIZE, VIRTQ_DESC_F_WRITE, 0);
      this.outstanding.add(id);
      this.q.publish(id);
    }
    if (k) this.kick();
    return k;
  }

  /** TX: queues frames (a zero net header in front of each); returns how many fit. */
  sendFrames(frames: readonly Uint8Array[]): number {
    this.reclaim();
    let k = 0;
    for (; k < frames.length && this.free.length; k++) {
      const f = frames[k]!;
      if (f.length + NET_HDR > BUF_SIZE) throw new RangeError(`frame of ${f.length} bytes does not fit a ${BUF_SIZE}-byte buffer`);
      const id = this.free.pop()!;
      const gpa = this.bufGpa(id);
      this.g.u8.fill(0, this.g.host(gpa), this.g.host(gpa) + NET_HDR);
      this.g.write(gpa + NET_HDR, f);
      this.q.setDesc(id, gpa, NET_HDR + f.length, 0, 0);
      this.outstanding.add(id);
      this.q.publish(id);
    }
    if (k) this.kick();
    return k;
  }

  /** Publishes an arbitrary head (hostile tests build the descriptors themselves). */
  publishRaw(head: number, kick = true): void {
    this.q.publish(head);
    if (kick) this.kick();
  }

  /** Reads new used entries; ids this ring handed out return to the free list. */
  takeUsed(): { id: number; len: number }[] {
    const used = this.q.takeUsed();
    for (const u of used) {
      if (this.outstanding.delete(u.id)) this.free.push(u.id);
    }
    return used;
  }

  /** TX: completions since the last call. */
  reclaim(): number {
    return this.takeUsed().length;
  }

  /** A frame spread over several buffers (MRG_RXBUF) whose later buffers are still to come. */
  private partial: { parts: Uint8Array[]; left: number } | null = null;

  /**
   * RX: frames delivered since the last call (net header stripped). A used
   * entry with len 0 is a buffer the back-end rejected: returned as null.
   * With MRG_RXBUF a frame larger than one buffer spans `num_buffers` used
   * entries (only the first has the header); they are joined.
   */
  takeRx(): (Uint8Array | null)[] {
    const out: (Uint8Array | null)[] = [];
    for (const u of this.takeUsed()) {
      if (u.len === 0 && !this.partial) { out.push(null); continue; }
      if (u.id >= this.size || u.len > BUF_SIZE) throw new Error(`ring ${this.index}: used entry ${JSON.stringify(u)} is impossible for the buffers posted`);
      const gpa = this.bufGpa(u.id);
      if (this.partial) {
        this.partial.parts.push(this.g.read(gpa, u.len));
        if (--this.partial.left === 0) {
          out.push(Buffer.concat(this.partial.parts));
          this.partial = null;
        }
        continue;
      }
      if (u.len < NET_HDR) throw new Error(`ring ${this.index}: used entry ${JSON.stringify(u)} shorter than the net header`);
      const numBuffers = this.g.dv.getUint16(this.g.host(gpa + 10, 2), true);
      if (numBuffers === 0) throw new Error(`ring ${this.index}: num_buffers 0`);
      const first = this.g.read(gpa + NET_HDR, u.len - NET_HDR);
      if (numBuffers === 1) out.push(first);
      else this.partial = { parts: [first], left: numBuffers - 1 };
    }
    return out;
  }

  /** The used index the back-end published. */
  usedIdx(): number { return this.q.usedIdx(); }

  close(): void {
    closeFd(this.kickFd);
    closeFd(this.callFd);
  }
}

// ---- frames -----------------------------------------------------------------

/** A 60-byte Ethernet frame (local ethertype 0x88b5) carrying `tag` and `seq`. */
export function testFrame(tag: number, seq: number, len = 60): Uint8Array {
  const f = new Uint8Array(len);
  f.set([0x02, 0, 0, 0, 0, 0xb0 + (tag & 0xf)], 0);
  f.set([0x02, 0, 0, 0, 0, 0xa0 + (tag & 0xf)], 6);
  f[12] = 0x88; f[13] = 0xb5;
  const v = new DataView(f.buffer);
  v.setUint32(14, tag >>> 0, true);
  v.setUint32(18, seq >>> 0, true);
  for (let i = 22; i < len; i++) f[i] = (seq + i) & 0xff;
  return f;
}

export function frameSeq(f: Uint8Array): { tag: number; seq: number } {
  const v = new DataView(f.buffer, f.byteOffset, f.byteLength);
  return { tag: v.getUint32(14, true), seq: v.getUint32(18, true) };
}

// ---- the front-end ----------------------------------------------------------

export interface Reply {
  request: number;
  flags: number;
  payload: Uint8Array;
}

export type Event = { kind: 'reply'; reply: Reply } | { kind: 'closed' } | { kind: 'timeout' };

export interface HandshakeOptions {
  /** 'dpdk': virtio-user's order; 'qemu': QEMU's (ENABLE before the memory table). */
  order?: 'dpdk' | 'qemu';
  /** Virtio features wanted (intersected with what the back-end offers). */
  features?: bigint;
  /** Protocol features wanted (intersected with the offer). */
  protocolFeatures?: bigint;
  queueSize?: number;
  /** Queue pairs to set up (default 1). */
  queuePairs?: number;
  /** Guest memory to announce (default: a fresh 4 MiB memfd). */
  memory?: GuestMemoryOptions;
  /** Post every RX buffer right after the rings start (default true). */
  postRx?: boolean;
}

/** What DPDK virtio-user negotiates by default, plus what our back-end offers on top. */
export const DEFAULT_FEATURES = [Feature.VERSION_1, Feature.MRG_RXBUF, Feature.EVENT_IDX, Feature.INDIRECT_DESC,
  Feature.PROTOCOL_FEATURES, Feature.STATUS, Feature.MTU].reduce((m, b) => m | featureBit(b), 0n);
/** DPDK virtio-user accepts MQ, REPLY_ACK and STATUS only. */
export const DEFAULT_PROTOCOL_FEATURES = [ProtoFeature.MQ, ProtoFeature.REPLY_ACK, ProtoFeature.STATUS]
  .reduce((m, b) => m | featureBit(b), 0n);

export class VhostFrontend {
  private readonly reader = new MessageReader('reply');
  private readonly rbuf = new Uint8Array(4096);
  private peerClosed = false;
  private closed = false;
  /** Why the peer was declared gone (EOF, ECONNRESET, EPIPE...). */
  closeReason = '';
  guest: GuestMemfd | null = null;
  rings: GuestRing[] = [];
  offeredFeatures = 0n;
  features = 0n;
  offeredProtocolFeatures = 0n;
  protocolFeatures = 0n;
  queueNum = 0;

  constructor(readonly fd: number) {
    // Non-blocking (libuv's poll handle would make it so anyway): receives
    // wait in the event loop, so an in-process back-end on the same loop keeps
    // running; send() falls back to a blocking sendmsg only when the socket
    // buffer is full.
    setNonBlocking(fd, true);
  }

  static connect(path: string): VhostFrontend {
    return new VhostFrontend(connectUnix(path));
  }

  /** Connects, retrying while the server refuses (its previous connection still closing). */
  static async connectReady(path: string, timeoutMs = 5000): Promise<VhostFrontend> {
    const deadline = Date.now() + timeoutMs;
    for (;;) {
      const fe = VhostFrontend.connect(path);
      const r = await fe.call(Req.GET_FEATURES).then(() => true, () => false);
      if (r) return fe;
      fe.close();
      if (Date.now() > deadline) throw new Error(`${path}: no front-end connection accepted within ${timeoutMs} ms`);
      await sleep(2);
    }
  }

  get replyAck(): boolean { return hasFeature(this.protocolFeatures, ProtoFeature.REPLY_ACK); }
  get isClosed(): boolean { return this.closed; }
  get isPeerClosed(): boolean { return this.peerClosed; }
  get rx(): GuestRing { return this.rings[0]!; }
  get tx(): GuestRing { return this.rings[1]!; }

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

  // ---- handshake ----

  /** Creates the guest memory and rings (nothing is sent). Idempotent. */
  prepareGuest(o: HandshakeOptions = {}): void {
    if (this.guest) return;
    const size = o.queueSize ?? 256;
    const pairs = o.queuePairs ?? 1;
    this.guest = new GuestMemfd(o.memory);
    this.rings = Array.from({ length: pairs * 2 }, (_, i) => new GuestRing(this.guest!, i, size));
  }

  /** GET_FEATURES, then GET/SET_PROTOCOL_FEATURES and GET_QUEUE_NUM when offered. */
  async negotiateProtocol(o: HandshakeOptions = {}): Promise<void> {
    this.offeredFeatures = await this.callU64(Req.GET_FEATURES);
    if (!hasFeature(this.offeredFeatures, Feature.PROTOCOL_FEATURES)) return;
    this.offeredProtocolFeatures = await this.callU64(Req.GET_PROTOCOL_FEATURES);
    const want = (o.protocolFeatures ?? DEFAULT_PROTOCOL_FEATURES) & this.offeredProtocolFeatures;
    // SET_PROTOCOL_FEATURES itself goes without NEED_REPLY: REPLY_ACK is not on yet.
    if (!this.request(Req.SET_PROTOCOL_FEATURES, F.u64(want))) throw new Error('closed at SET_PROTOCOL_FEATURES');
    this.protocolFeatures = want;
    if (hasFeature(want, ProtoFeature.MQ)) this.queueNum = Number(await this.callU64(Req.GET_QUEUE_NUM));
  }

  async setFeatures(o: HandshakeOptions = {}): Promise<void> {
    this.features = (o.features ?? DEFAULT_FEATURES) & this.offeredFeatures;
    await this.set(Req.SET_FEATURES, F.u64(this.features));
  }

  sendMemTable(): Promise<void> {
    return this.set(Req.SET_MEM_TABLE, F.memTable(this.guest!.regions()), this.guest!.fds());
  }

  async setCall(r: GuestRing): Promise<void> {
    await this.set(Req.SET_VRING_CALL, F.vringFdMsg(r.index, false), [r.callFd]);
  }

  async setEnable(r: GuestRing, on = true): Promise<void> {
    await this.set(Req.SET_VRING_ENABLE, F.vringState(r.index, on ? 1 : 0));
  }

  /** NUM, BASE, ADDR, KICK for one ring (the order QEMU and DPDK share). */
  async setupRing(r: GuestRing, base = 0): Promise<void> {
    await this.set(Req.SET_VRING_NUM, F.vringState(r.index, r.size));
    await this.set(Req.SET_VRING_BASE, F.vringState(r.index, base));
    await this.set(Req.SET_VRING_ADDR, F.vringAddr(r.addr()));
    await this.set(Req.SET_VRING_KICK, F.vringFdMsg(r.index, false), [r.kickFd]);
  }

  /**
   * Full setup, in DPDK virtio-user's order (default) or QEMU's. Creates the
   * guest memory and the rings; on return every ring has started (the last
   * messages were acknowledged, or a barrier passed).
   */
  async handshake(o: HandshakeOptions = {}): Promise<void> {
    this.prepareGuest(o);
    const withProtocol = (): boolean => hasFeature(this.offeredFeatures, Feature.PROTOCOL_FEATURES);
    if ((o.order ?? 'dpdk') === 'dpdk') {
      await this.set(Req.SET_OWNER);
      await this.negotiateProtocol(o);
      for (const r of this.rings) await this.setCall(r);
      await this.setFeatures(o);
      await this.sendMemTable();
      for (const r of this.rings) await this.setupRing(r);
      if (withProtocol()) for (const r of this.rings) await this.setEnable(r);
      if (hasFeature(this.protocolFeatures, ProtoFeature.STATUS)) await this.set(Req.SET_STATUS, F.u64(0xfn));
    } else {
      await this.negotiateProtocol(o);
      if (hasFeature(this.protocolFeatures, ProtoFeature.CONFIGURE_MEM_SLOTS)) await this.callU64(Req.GET_MAX_MEM_SLOTS);
      await this.set(Req.SET_OWNER);
      await this.callU64(Req.GET_FEATURES);
      for (const r of this.rings) await this.setCall(r);
      if (withProtocol()) for (const r of this.rings) await this.setEnable(r);
      await this.setFeatures(o);
      await this.sendMemTable();
      for (const r of this.rings) {
        await this.setupRing(r);
        await this.setCall(r);
      }
    }
    if (!this.replyAck) await this.barrier();
    if (o.postRx ?? true) for (const r of this.rings) if (r.isRx) r.postRx();
  }

  /** GET_VRING_BASE: stops the ring in the back-end, returns its next avail index. */
  async getVringBase(index: number): Promise<number> {
    return F.replyVringState(await this.call(Req.GET_VRING_BASE, F.vringState(index, 0))).num;
  }

  // ---- data ----

  /** Polls until `cond()` holds (rings are shared memory: nothing to wait on but time). */
  static async until(cond: () => boolean, timeoutMs: number, what: () => string): Promise<void> {
    const deadline = Date.now() + timeoutMs;
    while (!cond()) {
      if (Date.now() > deadline) throw new Error(`timed out after ${timeoutMs} ms waiting for ${what()}`);
      await sleep(1);
    }
  }

  /**
   * Receives on RX ring `index` until `n` frames arrived (re-posting buffers
   * as it goes); rejected buffers (len 0) are counted apart.
   */
  async receive(n: number, timeoutMs = 3000, index = 0): Promise<{ frames: Uint8Array[]; rejected: number }> {
    const rx = this.rings[index]!;
    const frames: Uint8Array[] = [];
    let rejected = 0;
    await VhostFrontend.until(() => {
      for (const f of rx.takeRx()) {
        if (f) frames.push(f); else rejected++;
      }
      if (rx.freeCount) rx.postRx();
      return frames.length >= n;
    }, timeoutMs, () => `${n} frames on ring ${index} (got ${frames.length}, ${rejected} buffers rejected)`);
    return { frames, rejected };
  }

  /** Sends frames on TX ring `index`, waiting for room; resolves once all were taken. */
  async transmit(frames: readonly Uint8Array[], timeoutMs = 3000, index = 1): Promise<void> {
    const tx = this.rings[index]!;
    let sent = 0;
    await VhostFrontend.until(() => {
      sent += tx.sendFrames(frames.slice(sent, sent + 64));
      tx.reclaim();
      return sent === frames.length && tx.outstanding.size === 0;
    }, timeoutMs, () => `TX ring ${index} to take ${frames.length} frames (sent ${sent}, ${tx.outstanding.size} still in the ring; avail.idx ${tx.q.availIdx}, used.idx ${tx.usedIdx()}, used flags ${tx.q.usedFlags()}, avail_event ${tx.q.availEvent()}, kicks pending ${tx.kickPending()})`);
  }

  /** Closes the socket, the rings' eventfds and the guest memory. */
  close(): void {
    if (this.closed) return;
    this.closed = true;
    unwatch(this.fd);
    closeFd(this.fd);
    for (const fd of this.reader.drainFds()) closeFd(fd);
    for (const r of this.rings) r.close();
    this.guest?.close();
    this.guest = null;
  }
}

// ---- the back-end process as seen from /proc ---------------------------------

/** Open fds of a process (entries of /proc/PID/fd). */
export function fdCount(pid: number | 'self'): number {
  return fdList(pid).length;
}

/**
 * "N -> target" for each open fd. readdirSync holds an fd on the directory
 * while it reads, which then fails readlink: skipped, so counts taken from
 * inside this process do not include it.
 */
export function fdList(pid: number | 'self'): string[] {
  const dir = `/proc/${pid}/fd`;
  const out: string[] = [];
  for (const name of readdirSync(dir)) {
    try {
      out.push(`${name} -> ${readlinkSync(`${dir}/${name}`)}`);
    } catch { /* gone meanwhile (the directory's own fd) */ }
  }
  return out;
}

/** Mappings in /proc/PID/maps whose path contains `needle` (a memfd name). */
export function mappingsOf(pid: number, needle: string): string[] {
  return readFileSync(`/proc/${pid}/maps`, 'utf8').split('\n').filter((l) => l.includes(needle));
}

/** True while the process exists and is not a zombie. */
export function processAlive(pid: number): boolean {
  if (!existsSync(`/proc/${pid}`)) return false;
  try {
    const stat = readFileSync(`/proc/${pid}/stat`, 'utf8');
    return stat.slice(stat.lastIndexOf(')') + 2)[0] !== 'Z';
  } catch {
    return false;
  }
}

/** Whether fd is open in this process. */
export function fdOpen(fd: number): boolean {
  try { fstatSync(fd); return true; } catch { return false; }
}
