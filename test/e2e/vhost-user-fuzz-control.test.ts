// Hostile control messages on port 1 of a real `vhost-user serve` (see
// hostile-bench.ts): framing, payload sizes, fd counts, unknown ids, memory
// tables and ring setup; each refused or the connection closed, nothing leaks.
import assert from 'node:assert/strict';
import { openSync } from 'node:fs';
import { describe, it } from 'node:test';
import { closeFd } from '../../src/sys/libc.js';
import { socketPair } from '../../src/sys/unix-fd.js';
import * as F from '../lib/frontend-codec.js';
import { HdrFlag, MAX_PAYLOAD_SIZE, Req, type MemRegion } from '../../src/vhost-user/protocol/index.js';
import { Bench, benchDir, flows, range, VERBOSE } from '../lib/hostile-bench.js';
import { type GuestMemfd, makeEventfd, memfdCreate, pipe, VhostFrontend } from '../lib/vhost-frontend.js';

describe('vhost-user back-end against hostile front-ends: control messages', () => {
  const dir = benchDir();

  for (const poll of ['event', 'busy'] as const) {
    it(`hostile control messages on port 1 (${poll} mode): each one refused or the connection closed, nothing leaks`, async () => {
      const bench = await Bench.start(dir(), `ctl-${poll}`, poll);
      try {
        await hostileControl(bench);
        await bench.assertReleased('qnh-ctl');
        await bench.assertGoodIntact();
        await bench.assertPort1Recovers(50);
        await bench.stop();
      } finally {
        bench.kill();
      }
    });
  }
});

// ---- hostile control messages ----------------------------------------------------

type Outcome = 'closed' | 'refused' | 'accepted';

/**
 * Sends bytes (+fds), then a probe; reports whether the back-end closed, acked
 * non-zero, or accepted (ack 0, or no ack at all before the probe's reply).
 */
async function outcome(fe: VhostFrontend, bytes: Uint8Array, fds: readonly number[] = []): Promise<Outcome> {
  const req = new DataView(bytes.buffer, bytes.byteOffset).getUint32(0, true);
  const probe = req === Req.GET_QUEUE_NUM ? Req.GET_FEATURES : Req.GET_QUEUE_NUM;
  if (!fe.send(bytes, fds) || !fe.request(probe)) return 'closed';
  // Read through to the probe's reply, so the next call starts on a clean stream.
  let result: Outcome = 'accepted';
  for (;;) {
    const e = await fe.next(3000);
    if (e.kind === 'timeout') throw new Error('the back-end neither answered nor closed');
    if (e.kind === 'closed') return 'closed';
    if (e.reply.request === probe) return result;
    if (e.reply.request === req && e.reply.payload.length === 8 && F.replyU64(e.reply) !== 0n) result = 'refused';
  }
}

const ACK = HdrFlag.VERSION | HdrFlag.NEED_REPLY;
const withAck = (req: number, payload?: Uint8Array): Uint8Array => F.encodeRequest(req, payload, { needReply: true });

interface Ctx {
  fe: VhostFrontend;
  g: GuestMemfd;
  /** fds for this case, closed after it. */
  own: (fd: number) => number;
}

const region = (g: GuestMemfd, over: Partial<MemRegion> = {}): MemRegion => ({ ...g.regions()[0]!, ...over });

async function ringReady(c: Ctx, index = 1): Promise<void> {
  await c.fe.sendMemTable();
  await c.fe.set(Req.SET_VRING_NUM, F.vringState(index, 256));
}

const CASES: [string, Outcome | Outcome[], (c: Ctx) => Promise<Outcome>][] = [
  // Framing and header.
  ['size field 0x10000', 'closed', (c) => outcome(c.fe, F.rawRequest(Req.SET_MEM_TABLE, ACK, 0x10000))],
  [`payload of ${MAX_PAYLOAD_SIZE + 1} bytes`, 'closed', (c) => outcome(c.fe, F.rawRequest(Req.SET_CONFIG, ACK, MAX_PAYLOAD_SIZE + 1, new Uint8Array(MAX_PAYLOAD_SIZE + 1)))],
  ['version 0', 'closed', (c) => outcome(c.fe, F.rawRequest(Req.GET_FEATURES, 0, 0))],
  ['version 2', 'closed', (c) => outcome(c.fe, F.rawRequest(Req.GET_FEATURES, 2, 0))],
  ['version 3', 'closed', (c) => outcome(c.fe, F.rawRequest(Req.GET_FEATURES, 3, 0))],
  ['REPLY flag on a request', 'closed', (c) => outcome(c.fe, F.rawRequest(Req.SET_OWNER, 0x5, 0))],
  ['undefined flag bit 4', 'closed', (c) => outcome(c.fe, F.rawRequest(Req.SET_OWNER, 0x11, 0))],
  ['flags 0xffffffff', 'closed', (c) => outcome(c.fe, F.rawRequest(Req.SET_OWNER, 0xffffffff, 0))],
  // Payload sizes.
  ['SET_FEATURES with 7 bytes', 'closed', (c) => outcome(c.fe, withAck(Req.SET_FEATURES, new Uint8Array(7)))],
  ['SET_VRING_NUM with 12 bytes', 'closed', (c) => outcome(c.fe, withAck(Req.SET_VRING_NUM, new Uint8Array(12)))],
  ['SET_VRING_ADDR with 32 bytes', 'closed', (c) => outcome(c.fe, withAck(Req.SET_VRING_ADDR, new Uint8Array(32)))],
  ['GET_FEATURES with a payload', 'closed', (c) => outcome(c.fe, withAck(Req.GET_FEATURES, new Uint8Array(8)))],
  ['SET_MEM_TABLE saying 2 regions, carrying 1', 'closed', (c) => {
    const p = F.memTable([region(c.g)]);
    new DataView(p.buffer).setUint32(0, 2, true);
    return outcome(c.fe, withAck(Req.SET_MEM_TABLE, p), [c.g.fd, c.g.fd]);
  }],
  ['GET_CONFIG of 300 bytes', 'closed', (c) => outcome(c.fe, withAck(Req.GET_CONFIG, new Uint8Array(12 + 250).fill(0xff)))],
  // fd counts.
  ['GET_FEATURES with an fd', 'closed', (c) => outcome(c.fe, withAck(Req.GET_FEATURES), [c.g.fd])],
  ['SET_MEM_TABLE: 1 region, 2 fds', 'closed', (c) => outcome(c.fe, withAck(Req.SET_MEM_TABLE, F.memTable([region(c.g)])), [c.g.fd, c.g.fd])],
  ['SET_VRING_CALL: no fd, no NOFD', 'closed', (c) => outcome(c.fe, withAck(Req.SET_VRING_CALL, F.vringFdMsg(0, false)))],
  ['SET_VRING_KICK: NOFD and an fd', 'closed', (c) => outcome(c.fe, withAck(Req.SET_VRING_KICK, F.vringFdMsg(0, true)), [c.fe.rx.kickFd])],
  ['9 fds on one message', 'closed', (c) => outcome(c.fe, withAck(Req.SET_VRING_CALL, F.vringFdMsg(0, false)), new Array<number>(9).fill(c.fe.rx.callFd))],
  ['33 fds on one message', 'closed', (c) => outcome(c.fe, withAck(Req.SET_VRING_CALL, F.vringFdMsg(0, false)), new Array<number>(33).fill(c.fe.rx.callFd))],
  ['SET_VRING_KICK with undefined bits', 'closed', (c) => outcome(c.fe, withAck(Req.SET_VRING_KICK, F.u64(0x10000n)), [c.fe.rx.kickFd])],
  // Unknown ids.
  ['id 0 with NEED_REPLY', 'refused', (c) => outcome(c.fe, withAck(0))],
  ['id 1000 with NEED_REPLY and fds', 'refused', (c) => outcome(c.fe, withAck(1000, new Uint8Array(16)), [c.g.fd, c.fe.rx.callFd])],
  ['id 0xffffffff with NEED_REPLY', 'refused', (c) => outcome(c.fe, withAck(0xffffffff))],
  ['id 28 (POSTCOPY_ADVISE) without NEED_REPLY', 'closed', (c) => outcome(c.fe, F.encodeRequest(28))],
  // Memory tables.
  ['regions overlapping in guest-physical space', 'refused', (c) => {
    const m = c.own(memfdCreate('qnh-ctl', 1 << 20));
    const r = region(c.g);
    return outcome(c.fe, withAck(Req.SET_MEM_TABLE, F.memTable([r, { ...r, memorySize: 1n << 20n, guestPhysAddr: r.guestPhysAddr + 4096n, userspaceAddr: 0x5000_0000_0000n }])), [c.g.fd, m]);
  }],
  ['regions overlapping in front-end virtual space', 'refused', (c) => {
    const r = region(c.g);
    return outcome(c.fe, withAck(Req.SET_MEM_TABLE, F.memTable([r, { ...r, guestPhysAddr: 0x1_0000_0000n, userspaceAddr: r.userspaceAddr + 8192n }])), [c.g.fd, c.g.fd]);
  }],
  ['9 regions', 'closed', (c) => outcome(c.fe, withAck(Req.SET_MEM_TABLE, F.memTable(range(9).map((i) => region(c.g, { guestPhysAddr: BigInt(i) << 32n, userspaceAddr: 0x7f00_0000_0000n + (BigInt(i) << 32n) })))), new Array<number>(8).fill(c.g.fd))],
  ['region of size 0', 'closed', (c) => outcome(c.fe, withAck(Req.SET_MEM_TABLE, F.memTable([region(c.g, { memorySize: 0n })])), [c.g.fd])],
  ['region wrapping past 2^64', 'closed', (c) => outcome(c.fe, withAck(Req.SET_MEM_TABLE, F.memTable([region(c.g, { guestPhysAddr: (1n << 64n) - 4096n, memorySize: 8192n })])), [c.g.fd])],
  ['region ending above 2^53', 'refused', (c) => outcome(c.fe, withAck(Req.SET_MEM_TABLE, F.memTable([region(c.g, { memorySize: 1n << 60n })])), [c.g.fd])],
  ['region with mmap_offset 4 (views must be 8-aligned)', ['closed', 'refused'], (c) => outcome(c.fe, withAck(Req.SET_MEM_TABLE, F.memTable([region(c.g, { mmapOffset: 4n, memorySize: 4096n })])), [c.g.fd])],
  ['region backed by a pipe', ['closed', 'refused'], (c) => outcome(c.fe, withAck(Req.SET_MEM_TABLE, F.memTable([region(c.g)])), [c.own(pipe()[0])])],
  ['region backed by /dev/null', ['closed', 'refused'], (c) => outcome(c.fe, withAck(Req.SET_MEM_TABLE, F.memTable([region(c.g)])), [c.own(openSync('/dev/null', 'r'))])],
  ['region backed by an eventfd', ['closed', 'refused'], (c) => outcome(c.fe, withAck(Req.SET_MEM_TABLE, F.memTable([region(c.g)])), [c.own(makeEventfd())])],
  ['region backed by a socket', ['closed', 'refused'], (c) => outcome(c.fe, withAck(Req.SET_MEM_TABLE, F.memTable([region(c.g)])), [c.own(socketPair()[0])])],
  ['ADD_MEM_REG beyond 32 slots', 'refused', async (c) => {
    const m = c.own(memfdCreate('qnh-ctl', 4096));
    let last: Outcome = 'accepted';
    for (let i = 0; i < 33 && last === 'accepted'; i++) {
      last = await outcome(c.fe, withAck(Req.ADD_MEM_REG, F.memRegionMsg({ guestPhysAddr: BigInt(i) << 20n, memorySize: 4096n, userspaceAddr: 0x6000_0000_0000n + (BigInt(i) << 20n), mmapOffset: 0n })), [m]);
      if (last !== 'accepted') assert.equal(i, 32, `region ${i} of 32 refused`);
    }
    return last;
  }],
  ['SET_LOG_BASE with a pipe', 'refused', (c) => outcome(c.fe, withAck(Req.SET_LOG_BASE, F.logBase(4096n, 0n)), [c.own(pipe()[1])])],
  // Rings.
  ['used ring outside memory', ['refused'], async (c) => {
    await ringReady(c);
    await c.fe.set(Req.SET_VRING_ADDR, F.vringAddr({ ...c.fe.tx.addr(), used: BigInt(c.g.uaBase + c.g.size - 16) }));
    return outcome(c.fe, withAck(Req.SET_VRING_KICK, F.vringFdMsg(1, false)), [c.fe.tx.kickFd]);
  }],
  ['desc not 16-byte aligned', 'closed', async (c) => { await ringReady(c); return outcome(c.fe, withAck(Req.SET_VRING_ADDR, F.vringAddr({ ...c.fe.tx.addr(), desc: c.fe.tx.addr().desc + 8n }))); }],
  ['avail at an odd address', 'closed', async (c) => { await ringReady(c); return outcome(c.fe, withAck(Req.SET_VRING_ADDR, F.vringAddr({ ...c.fe.tx.addr(), avail: c.fe.tx.addr().avail + 1n }))); }],
  ['ring addresses above 2^53', 'refused', async (c) => { await ringReady(c); return outcome(c.fe, withAck(Req.SET_VRING_ADDR, F.vringAddr({ ...c.fe.tx.addr(), desc: 1n << 60n }))); }],
  ['rings misaligned in host memory (region user address 2 mod 4)', ['closed', 'refused'], async (c) => {
    // Aligned as front-end addresses, but 2 bytes into a 4-byte word of the
    // mapping: the data path refuses to lay its typed arrays over them.
    await c.fe.set(Req.SET_MEM_TABLE, F.memTable([region(c.g, { userspaceAddr: BigInt(c.g.uaBase) + 2n })]), [c.g.fd]);
    await c.fe.set(Req.SET_VRING_NUM, F.vringState(1, 256));
    await c.fe.set(Req.SET_VRING_ADDR, F.vringAddr(c.fe.tx.addr()));
    return outcome(c.fe, withAck(Req.SET_VRING_KICK, F.vringFdMsg(1, false)), [c.fe.tx.kickFd]);
  }],
  ['ring size 0', 'refused', (c) => outcome(c.fe, withAck(Req.SET_VRING_NUM, F.vringState(0, 0)))],
  ['ring size 3', 'refused', (c) => outcome(c.fe, withAck(Req.SET_VRING_NUM, F.vringState(0, 3)))],
  ['ring size 65536', 'refused', (c) => outcome(c.fe, withAck(Req.SET_VRING_NUM, F.vringState(0, 65536)))],
  ['ring index 2 of 2', 'refused', (c) => outcome(c.fe, withAck(Req.SET_VRING_NUM, F.vringState(2, 256)))],
  ['SET_VRING_KICK for ring 255 with an fd', 'refused', (c) => outcome(c.fe, withAck(Req.SET_VRING_KICK, F.vringFdMsg(255, false)), [c.fe.tx.kickFd])],
  ['SET_VRING_BASE 0x10000', 'refused', (c) => outcome(c.fe, withAck(Req.SET_VRING_BASE, F.vringState(0, 0x10000)))],
  ['SET_VRING_ENABLE 2', 'closed', (c) => outcome(c.fe, withAck(Req.SET_VRING_ENABLE, F.vringState(0, 2)))],
  ['features never offered', 'refused', (c) => outcome(c.fe, withAck(Req.SET_FEATURES, F.u64(0xffff_ffff_ffff_ffffn)))],
  ['NET_SET_MTU 10', 'refused', (c) => outcome(c.fe, withAck(Req.NET_SET_MTU, F.u64(10n)))],
  ['SET_STATUS 0x100', 'closed', (c) => outcome(c.fe, withAck(Req.SET_STATUS, F.u64(0x100n)))],
  // A message cut short, then the front-end goes away (fds arrived with the header).
  ['SET_MEM_TABLE cut short, then EOF', 'closed', async (c) => {
    c.fe.send(withAck(Req.SET_MEM_TABLE, F.memTable([region(c.g)])).subarray(0, 20), [c.g.fd]);
    return 'closed';
  }],
];

async function hostileControl(bench: Bench): Promise<void> {
  for (const [name, expected, run] of CASES) {
    const fe = await VhostFrontend.connectReady(bench.b);
    const own: number[] = [];
    try {
      fe.prepareGuest({ memory: { name: 'qnh-ctl' } });
      await fe.set(Req.SET_OWNER);
      await fe.negotiateProtocol();
      await fe.setFeatures();
      const got = await run({ fe, g: fe.guest!, own: (fd) => { own.push(fd); return fd; } });
      if (VERBOSE) console.error(`${name}: ${got}`);
      assert.ok((Array.isArray(expected) ? expected : [expected]).includes(got), `${name}: expected ${String(expected)}, got ${got}`);
      bench.assertAlive(name);
    } finally {
      fe.close();
      own.forEach(closeFd);
    }
  }
  // Port 0's data path kept going through all of it.
  const peer = await VhostFrontend.connectReady(bench.b);
  try {
    await peer.handshake({ memory: { name: 'qnh-ctl' } });
    await flows(bench.good, peer, 50, 70);
  } finally {
    peer.close();
  }
}
