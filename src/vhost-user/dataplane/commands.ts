// The messages between the main thread and the data-path worker, as typed
// unions: every command names its fields, every result type is known to the
// caller (no `op: string` and casts). All plain data: it crosses postMessage.
import type { LogSpec, PortStats, QueueSpec, RegionSpec } from './api.js';
import type { PortModeName } from '../switch/forwarding.js';
import type { PacketRings } from '../../sys/packet.js';
import type { XskTxInfo } from '../../sys/xsk.js';

export type PollMode = 'event' | 'busy';

export interface MacEntry { mac: string; port: number; ageMs: number }

/** Commands and what each one returns. */
export interface CommandResults {
  addPort: null;
  removePort: null;
  setMode: null;
  setUplink: null;
  setMemory: null;
  setLog: null;
  startQueue: null;
  stopQueue: number;
  setCall: null;
  setEnabled: null;
  inject: null;
  reset: null;
  stats: null;
  macs: MacEntry[];
  shutdown: null;
}

export type WorkerCommand =
  | { op: 'addPort'; port: number; queuePairs: number; mode: PortModeName }
  | { op: 'removePort'; port: number }
  | { op: 'setMode'; port: number; mode: PortModeName }
  /**
   * The uplink's fd (a tap, or an AF_PACKET socket with `rings` to map), or
   * -1 for none; `vnetHdr`: its frames carry a virtio_net_hdr; `senderFd`:
   * the packet socket for frames bigger than a TX slot; `xsk`: the AF_XDP
   * socket plain frames leave through (its UMEM and rings mapped there too).
   */
  | { op: 'setUplink'; fd: number; rings?: PacketRings; vnetHdr?: boolean; senderFd?: number; xsk?: XskTxInfo }
  | { op: 'setMemory'; port: number; regions: RegionSpec[] }
  | { op: 'setLog'; port: number; log: LogSpec }
  | { op: 'startQueue'; port: number; q: number; spec: QueueSpec }
  | { op: 'stopQueue'; port: number; q: number }
  | { op: 'setCall'; port: number; q: number; fd: number }
  | { op: 'setEnabled'; port: number; q: number; enabled: boolean }
  /** A frame entering the switch as if the port's guest had sent it (SEND_RARP). */
  | { op: 'inject'; port: number; frame: Uint8Array }
  | { op: 'reset'; port: number }
  | { op: 'stats' }
  | { op: 'macs' }
  | { op: 'shutdown' };

export type Op = WorkerCommand['op'];
export type CommandOf<O extends Op> = Extract<WorkerCommand, { op: O }>;
export type Request = WorkerCommand & { id: number };

/** The uplink's counters, reported under this port id. */
export const UPLINK_STATS_ID = -1;

/** Worker -> main thread. */
export type WorkerMessage =
  | { id: number; ok: true; result: unknown }
  | { id: number; ok: false; error: string }
  | { stats: [number, PortStats][] }
  | { event: 'mac-learned'; mac: string; port: number; moved: boolean };
