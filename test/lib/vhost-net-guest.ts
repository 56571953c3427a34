// Test support: our virtqueue driver as the guest of a vhost-net device (the
// vhost-kernel transport's fds), with rings and buffers in our own memory, as
// QEMU would set them up: the kernel lab's proof that vhost-net moves frames.
import assert from 'node:assert/strict';
import { execFileSync } from 'node:child_process';
import { splitFds } from '../../src/launch/setup-nic.js';
import type { PreparedEndpoint } from '../../src/setup/endpoint.js';
import { vhostNet } from './vhost-net.js';
import { arpReplyFrom, arpRequest, icmpEcho, isEchoReply } from './frames.js';
import { GuestMemfd, GuestRing, sleep } from './vhost-frontend.js';

const VERSION_1 = 1n << 32n;
const MRG_RXBUF = 1n << 15n;
export const ip = (...a: string[]): string => execFileSync('ip', a, { encoding: 'utf8' });

/** Our driver as the guest of one vhost-net device: rings 0 (RX) and 1 (TX). */
export class VhostGuest {
  readonly g = new GuestMemfd({ realAddresses: true, name: 'qnh-lab-guest' });
  readonly rx = new GuestRing(this.g, 0, 256);
  readonly tx = new GuestRing(this.g, 1, 256);
  constructor(readonly vhostFd: number, readonly tapFd: number) {
    vhostNet.setOwner(vhostFd);
    const offered = vhostNet.getFeatures(vhostFd);
    assert.ok(offered & VERSION_1 && offered & MRG_RXBUF, `vhost-net offers 0x${offered.toString(16)}`);
    vhostNet.setFeatures(vhostFd, VERSION_1 | MRG_RXBUF);
    vhostNet.setMemTable(vhostFd, [{ gpa: BigInt(this.g.gpaBase), size: BigInt(this.g.size), userAddr: BigInt(this.g.uaBase) }]);
    for (const r of [this.rx, this.tx]) {
      vhostNet.setVringNum(vhostFd, r.index, r.size);
      vhostNet.setVringBase(vhostFd, r.index, 0);
      const a = r.addr();
      vhostNet.setVringAddr(vhostFd, r.index, a.desc, a.used, a.avail);
      vhostNet.setVringKick(vhostFd, r.index, r.kickFd);
      vhostNet.setVringCall(vhostFd, r.index, r.callFd);
    }
    for (const r of [this.rx, this.tx]) vhostNet.setBackend(vhostFd, r.index, tapFd);
    this.rx.postRx();
  }
  /** Sends frames and waits until one received frame passes `match`. */
  async exchange(frames: Buffer[], match: (f: Uint8Array) => boolean, timeoutMs = 30_000): Promise<Uint8Array> {
    this.send(frames);
    return this.waitRx(match, timeoutMs);
  }
  send(frames: Buffer[]): void {
    assert.equal(this.tx.sendFrames(frames), frames.length);
  }
  /** Waits until a received frame passes `match` (re-posting RX buffers). */
  async waitRx(match: (f: Uint8Array) => boolean, timeoutMs = 30_000): Promise<Uint8Array> {
    const deadline = Date.now() + timeoutMs;
    for (;;) {
      for (const f of this.rx.takeRx()) {
        if (f && match(f)) return f;
      }
      if (this.rx.freeCount) this.rx.postRx();
      if (Date.now() > deadline) throw new Error(`no matching frame within ${timeoutMs} ms (TX used ${this.tx.usedIdx()}, RX used ${this.rx.usedIdx()})`);
      await sleep(5);
    }
  }
  close(): void {
    for (const r of [this.rx, this.tx]) { try { vhostNet.setBackend(this.vhostFd, r.index, -1); } catch { /* closing anyway */ } }
    this.rx.close();
    this.tx.close();
    this.g.close();
  }
}

export const counters = (dev: string): { rx: number; tx: number } => {
  const s = (JSON.parse(ip('-s', '-j', 'link', 'show', dev)) as { stats64: { rx: { packets: number }; tx: { packets: number } } }[])[0]!.stats64;
  return { rx: s.rx.packets, tx: s.tx.packets };
};

/**
 * Plays the guest of a vhost-kernel NIC: ARP for gwIp, then 3 echo requests;
 * `dev` is the host-side link whose counters must show the frames.
 */
export async function driveArpPing(n: PreparedEndpoint, gwIp: string, myIp: string, dev: string): Promise<string> {
  assert.equal(n.choice.transport.transport, 'vhost-kernel');
  const { queueFds, vhostFds } = splitFds(n.choice);
  assert.equal(vhostFds.length, 1);
  const guest = new VhostGuest(vhostFds[0]!, queueFds[0]!);
  try {
    const mac = n.choice.endpoint.mac ?? '52:54:00:99:00:02';
    const before = counters(dev);
    const arp = await guest.exchange([arpRequest(mac, myIp, gwIp)], (f) => arpReplyFrom(f, gwIp) !== null);
    const gwMac = arpReplyFrom(arp, gwIp)!;
    const id = 0x4242;
    const echoes = [1, 2, 3].map((seq) => icmpEcho(mac, gwMac, myIp, gwIp, id, seq));
    await guest.exchange(echoes, (f) => isEchoReply(f, gwIp, id, 3));
    const after = counters(dev);
    // The host side saw what vhost-net carried: >= 4 frames in (ARP + 3 echoes), >= 2 out.
    assert.ok(after.rx - before.rx >= 4 && after.tx - before.tx >= 2, `${dev} counters ${JSON.stringify(before)} -> ${JSON.stringify(after)}`);
    return `${dev}: ARP reply from ${gwMac}, 3 echo replies; rx +${after.rx - before.rx}, tx +${after.tx - before.tx}`;
  } finally {
    guest.close();
  }
}

