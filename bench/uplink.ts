// The switch's uplink against DPDK's own answer to the same job, same
// generators, same veth, alternating in every round (the machine is shared:
// rates swing from round to round, the ratio within a round much less):
// - qnh-packet: our switch with `--uplink up0` (AF_PACKET RX ring; out through
//   AF_XDP, the default `--uplink-tx auto`);
// - qnh-ringtx: the same with `--uplink-tx packet` (out through the TPACKET TX
//   ring, as before AF_XDP): the A/B that chose AF_XDP;
// - qnh-tap: our switch with `--br br0` (a tap of ours on a bridge with up0);
// - dpdk: testpmd io-forwarding between a net_vhost port (the guest's) and a
//   net_af_packet port on up0 (DPDK's PMDs, default ring sizes);
// - dpdk-afxdp: the same with DPDK's net_af_xdp PMD on up0 (its own XDP
//   program, copy mode on a veth);
// - ovs-dpdk: OVS-DPDK (bench/ovs-dpdk.ts, run in the lab's namespace) with a
//   dpdkvhostuser port (the guest's) and a `type=dpdk` port on up0 through
//   DPDK's net_af_packet PMD, switched by the NORMAL action;
// - ovs-afxdp: the same OVS with up0 as OVS's own AF_XDP port (`type=afxdp`,
//   its default mode: native XDP on a veth).
// Where OVS cannot run (not installed, no hugepages, the port refused) the
// result says why and the other back-ends are measured as before.
// Directions:
// - out (guest -> uplink): testpmd virtio-user txonly into the back-end's port;
//   rate = frames arriving on the far end of the veth (far0's rx_packets) per
//   second, so frames taken from the guest but lost inside do not count.
// - in (uplink -> guest): testpmd net_af_packet txonly on far0, addressed to
//   the guest's MAC; the guest is testpmd virtio-user rxonly; rate = the
//   guest's Rx-pps median while the sender runs.
// Back-ends (ours: the whole process) run on CPU 1; generator and sink
// forwarding cores on CPU 0.
import { execFileSync } from 'node:child_process';
import { mkdtempSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { withNetNs, type NetNs } from '../test/lib/netns.js';
import { OvsDpdk, ovsMissing } from './ovs-dpdk.js';
import { Serve } from '../test/lib/serve.js';
import { Testpmd, parseTestpmd } from '../test/lib/testpmd.js';
import { dpdkRunDir, removeLater } from './leftovers.js';

/** qnh-packet-nogso: `--uplink` with `--offloads off` (no vnet header, the MTU-sized ring slots of before). */
export type UplinkBackend = 'qnh-packet' | 'qnh-ringtx' | 'qnh-packet-nogso' | 'qnh-tap' | 'dpdk' | 'dpdk-afxdp' | OvsBackend;
type OvsBackend = 'ovs-dpdk' | 'ovs-afxdp';
/** The references our --uplink is compared with. */
const REFERENCES = ['dpdk', 'dpdk-afxdp', 'ovs-dpdk', 'ovs-afxdp'] as const;
/** DPDK's PMD on up0, by DPDK back-end. */
const DPDK_UPLINK = { dpdk: 'net_af_packet0,iface=up0', 'dpdk-afxdp': 'net_af_xdp0,iface=up0,start_queue=0,queue_count=1' } as const;
/** How each OVS back-end attaches up0. */
const OVS_UPLINK: Record<OvsBackend, string[]> = {
  'ovs-dpdk': ['type=dpdk', 'options:dpdk-devargs=net_af_packet0,iface=up0'],
  'ovs-afxdp': ['type=afxdp'],
};
const isOvs = (b: UplinkBackend): b is OvsBackend => b in OVS_UPLINK;
export type UplinkDirection = 'out' | 'in';
export interface UplinkRow {
  direction: UplinkDirection; backend: UplinkBackend; frameBytes: number;
  /** out: frames/s arriving at the far end; in: frames/s delivered to the guest. */
  mpps: number;
  /** out: frames/s the generator sent into the back-end; in: frames/s the sender put on the wire. */
  offeredMpps: number;
}
/** qnh-packet / `versus`, median of the per-round ratios. */
export interface UplinkRatio { direction: UplinkDirection; frameBytes: number; versus: (typeof REFERENCES)[number]; ratio: number; perRound: number[] }
export interface UplinkResult {
  rounds: number; rows: UplinkRow[]; ratios: UplinkRatio[]; raw: (UplinkRow & { round: number })[];
  /** Why an OVS back-end was not measured (its own words), by back-end. */
  ovsUnavailable: Partial<Record<OvsBackend, string>>;
}

const GUEST_MAC = '02:00:00:00:00:0a';
const WARM = 2;
const sleep = (ms: number): Promise<void> => new Promise((r) => setTimeout(r, ms));
const median = (xs: number[]): number => (xs.length ? [...xs].sort((a, b) => a - b)[Math.floor(xs.length / 2)]! : 0);

interface Lab { ns: NetNs; sock: string }

/**
 * The back-end of `backend` with the uplink up0, pinned to CPU 1, for fn's
 * duration; fn gets the guest's vhost-user socket (lab.sock, or OVS's own).
 */
async function withBackend<T>(lab: Lab, backend: UplinkBackend, fn: (sock: string) => Promise<T>): Promise<T> {
  if (isOvs(backend)) {
    const o = await OvsDpdk.start(1, 1, lab.ns);
    try {
      o.vsctl('add-port', 'br0', 'up0', '--', 'set', 'Interface', 'up0', ...OVS_UPLINK[backend]);
      const error = o.vsctl('get', 'Interface', 'up0', 'error').trim();
      if (error !== '[]' && error !== '""') throw new Error(`OVS refused up0 as ${OVS_UPLINK[backend].join(' ')}: ${error}`);
      return await fn(o.sockets[0]!);
    } finally {
      await o.stop();
    }
  }
  if (backend === 'dpdk' || backend === 'dpdk-afxdp') {
    const prefix = `qnh-upd-${process.pid}`;
    const forget = removeLater(dpdkRunDir(prefix));
    const t = new Testpmd({
      vdevs: [`net_vhost0,iface=${lab.sock},queues=1,client=0`, DPDK_UPLINK[backend]],
      forwardMode: 'io', lcores: '0@1,1@1', prefix, netns: lab.ns.name,
    });
    try {
      if (!(await t.waitFor(/Port statistics|Rx-pps/, 20000))) throw new Error(`DPDK back-end did not start: ${t.output().slice(-2000)}`);
      return await fn(lab.sock);
    } finally {
      await t.stop();
      forget();
    }
  }
  const args = { 'qnh-packet': ['--uplink', 'up0'], 'qnh-ringtx': ['--uplink', 'up0', '--uplink-tx', 'packet'], 'qnh-packet-nogso': ['--uplink', 'up0', '--offloads', 'off'], 'qnh-tap': ['--br', 'br0'] }[backend];
  const serve = new Serve(['--socket', lab.sock, ...args, '--poll', 'busy', '--allow-unsealed-memory'], lab.ns);
  try {
    await serve.ready([lab.sock]);
    execFileSync('taskset', ['-a', '-p', '-c', '1', String(serve.proc.pid)], { stdio: 'ignore' });
    const tap = /uplink: tap (\S+) on bridge/.exec(serve.log())?.[1];
    if (tap) lab.ns.ip('link', 'set', tap, 'mtu', '9000');
    return await fn(lab.sock);
  } finally {
    await serve.stop();
  }
}

const rxPackets = (ns: NetNs, dev: string): number => Number(ns.exec('cat', `/sys/class/net/${dev}/statistics/rx_packets`).trim());

async function out(lab: Lab, frameBytes: number, seconds: number): Promise<{ mpps: number; offeredMpps: number }> {
  const prefix = `qnh-upo-${process.pid}`;
  const forget = removeLater(dpdkRunDir(prefix));
  const t = new Testpmd({ vdevs: [`net_virtio_user0,path=${lab.sock},queues=1`], forwardMode: 'txonly', lcores: '0@1,1@0', prefix, pktLen: frameBytes });
  try {
    if (!(await t.waitFor(/Tx-pps/, 20000))) throw new Error(`generator did not start: ${t.output().slice(-1500)}`);
    await sleep(WARM * 1000);
    const c0 = rxPackets(lab.ns, 'far0');
    const t0 = process.hrtime.bigint();
    const from = t.output().length;
    await sleep(seconds * 1000);
    const c1 = rxPackets(lab.ns, 'far0');
    const t1 = process.hrtime.bigint();
    const window = t.output().slice(from);
    return { mpps: (c1 - c0) / (Number(t1 - t0) / 1e3), offeredMpps: median(parseTestpmd(window).txPps) / 1e6 };
  } finally {
    await t.stop();
    forget();
  }
}

async function into(lab: Lab, frameBytes: number, seconds: number): Promise<{ mpps: number; offeredMpps: number }> {
  const gPrefix = `qnh-upi-guest-${process.pid}`;
  const sPrefix = `qnh-upi-send-${process.pid}`;
  const forget = [removeLater(dpdkRunDir(gPrefix)), removeLater(dpdkRunDir(sPrefix))];
  // The receiving guest shares CPU 0 with the busy sender: it drains its ring
  // once per scheduler slice, so the ring's size caps what it can take (256
  // descriptors per slice measured as ~32 k frames/s for every back-end, 1024
  // as 4x that). 4096 lets it take what the sender offers (the sender is then
  // the limit: it also pays the kernel's delivery into the back-end's socket).
  // BENCH_UPLINK_GUEST_RING sets it (virtio-user queue_size, testpmd --rxd).
  const ring = Number(process.env.BENCH_UPLINK_GUEST_RING ?? 4096);
  const guest = new Testpmd({
    vdevs: [`net_virtio_user0,path=${lab.sock},queues=1,queue_size=${ring},mac=${GUEST_MAC}`], forwardMode: 'rxonly', lcores: '0@1,1@0', prefix: gPrefix,
    extra: [`--rxd=${ring}`, `--txd=${ring}`],
  });
  let sender: Testpmd | null = null;
  try {
    if (!(await guest.waitFor(/Rx-pps/, 20000))) throw new Error(`guest testpmd did not start: ${guest.output().slice(-1500)}`);
    await sleep(500);
    sender = new Testpmd({
      vdevs: ['net_af_packet0,iface=far0'], forwardMode: 'txonly', lcores: '0@1,1@0', prefix: sPrefix,
      pktLen: frameBytes, netns: lab.ns.name, extra: [`--eth-peer=0,${GUEST_MAC}`],
    });
    if (!(await sender.waitFor(/Tx-pps/, 20000))) throw new Error(`sender testpmd did not start: ${sender.output().slice(-1500)}`);
    await sleep(WARM * 1000);
    const gFrom = guest.output().length;
    const sFrom = sender.output().length;
    await sleep(seconds * 1000);
    const got = parseTestpmd(guest.output().slice(gFrom)).rxPps;
    const sent = parseTestpmd(sender.output().slice(sFrom)).txPps;
    return { mpps: median(got) / 1e6, offeredMpps: median(sent) / 1e6 };
  } finally {
    if (sender) await sender.stop();
    await guest.stop();
    for (const f of forget) f();
  }
}

/** A namespace with the veth up0/far0 (and for qnh-tap, the bridge br0 holding up0). */
async function withLab<T>(dir: string, backend: UplinkBackend, fn: (lab: Lab) => Promise<T>): Promise<T> {
  return withNetNs(async (ns) => {
    ns.ip('link', 'add', 'up0', 'type', 'veth', 'peer', 'name', 'far0');
    for (const l of ['up0', 'far0']) ns.ip('link', 'set', l, 'up');
    if (backend === 'qnh-tap') {
      ns.addBridge('br0');
      ns.ip('link', 'set', 'up0', 'master', 'br0');
    }
    return fn({ ns, sock: join(dir, `${backend}.sock`) });
  }, 'qnhb');
}

/**
 * `rounds` rounds; in each, every (direction, frame size) runs on every
 * back-end back to back. Rows are medians over the rounds; ratios are
 * medians of the per-round ratios qnh-packet / dpdk.
 */
export async function benchUplink(seconds = 5, sizes = [64, 1514], rounds = 1, backends: UplinkBackend[] = ['qnh-packet', 'dpdk', 'ovs-dpdk', 'qnh-tap'], directions: UplinkDirection[] = ['out', 'in']): Promise<UplinkResult> {
  const ovsUnavailable: Partial<Record<OvsBackend, string>> = {};
  const missing = ovsMissing();
  for (const b of backends.filter(isOvs)) {
    if (missing) ovsUnavailable[b] = missing;
  }
  if (missing && backends.some(isOvs)) console.error(`uplink: OVS not measured: ${missing}`);
  const dir = mkdtempSync(join(tmpdir(), 'qnh-bench-up-'));
  const forgetDir = removeLater(dir);
  const raw: (UplinkRow & { round: number })[] = [];
  try {
    for (let round = 0; round < rounds; round++) {
      for (const direction of directions) {
        for (const frameBytes of sizes) {
          // Alternate the order too, so neither side always runs first.
          const order = round % 2 === 0 ? backends : [...backends].reverse();
          for (const backend of order) {
            if (isOvs(backend) && ovsUnavailable[backend]) continue;
            let r: { mpps: number; offeredMpps: number };
            try {
              r = await withLab(dir, backend, (lab) => withBackend(lab, backend, (sock) => {
                const at = { ...lab, sock };
                return direction === 'out' ? out(at, frameBytes, seconds) : into(at, frameBytes, seconds);
              }));
            } catch (e) {
              // OVS is a guest here: when it cannot run, the bench goes on without it.
              if (!isOvs(backend)) throw e;
              ovsUnavailable[backend] = (e as Error).message.split('\n')[0]!;
              console.error(`uplink: ${backend} not measured: ${ovsUnavailable[backend]}`);
              continue;
            }
            raw.push({ direction, backend, frameBytes, ...r, round });
            console.error(`round ${round + 1}/${rounds} ${direction} ${frameBytes} B ${backend}: ${r.mpps.toFixed(3)} Mpps (offered ${r.offeredMpps.toFixed(3)})`);
          }
        }
      }
    }
  } finally {
    forgetDir();
  }
  const rows: UplinkRow[] = [];
  const ratios: UplinkRatio[] = [];
  for (const direction of directions) {
    for (const frameBytes of sizes) {
      for (const backend of backends) {
        const mine = raw.filter((r) => r.direction === direction && r.frameBytes === frameBytes && r.backend === backend);
        if (mine.length === 0) continue;
        rows.push({ direction, backend, frameBytes, mpps: median(mine.map((r) => r.mpps)), offeredMpps: median(mine.map((r) => r.offeredMpps)) });
      }
      for (const versus of REFERENCES) {
        const perRound: number[] = [];
        for (let round = 0; round < rounds; round++) {
          const at = (b: UplinkBackend): number => raw.find((r) => r.round === round && r.direction === direction && r.frameBytes === frameBytes && r.backend === b)?.mpps ?? 0;
          if (at(versus) > 0) perRound.push(at('qnh-packet') / at(versus));
        }
        if (perRound.length) ratios.push({ direction, frameBytes, versus, ratio: median(perRound), perRound });
      }
    }
  }
  return { rounds, rows, ratios, raw, ovsUnavailable };
}
