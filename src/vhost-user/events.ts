// The switch's management events: what `--events` prints on stdout and the
// control socket streams, one JSON object per line. Every event has `event`,
// `port` and `socket`; `time` is an ISO timestamp. These are the signals a
// manager waits for (hot-plug the NIC once the back-end is there).
import type { PortModeName } from './switch/forwarding.js';

export type SwitchEvent =
  /** A front-end connected to the port (or we connected to it, --client). */
  | { event: 'connected'; port: number; socket: string }
  /** The guest's rings started (a TX and an RX ring): traffic can flow. */
  | { event: 'ready'; port: number; socket: string }
  | { event: 'disconnected'; port: number; socket: string; reason: string }
  /** A source MAC seen for the first time, or on another port than before. `port` is "uplink" for the uplink. */
  | { event: 'mac-learned'; port: number | 'uplink'; socket: string | null; mac: string; moved: boolean }
  | { event: 'port-added'; port: number; socket: string; client: boolean; mode: PortModeName; owner: { uid: number; gid: number } }
  /** A front-end that is neither the port's owner nor root tried the port's socket and was closed on. */
  | { event: 'refused'; port: number; socket: string; uid: number; gid: number; pid: number; reason: string }
  | { event: 'port-removed'; port: number; socket: string; owner: { uid: number; gid: number } };

export type Stamped = SwitchEvent & { time: string };

export type EventListener = (e: Stamped) => void;

export class EventBus {
  private readonly listeners = new Set<EventListener>();
  on(l: EventListener): () => void {
    this.listeners.add(l);
    return () => this.listeners.delete(l);
  }
  emit(e: SwitchEvent): void {
    const s = { ...e, time: new Date().toISOString() } as Stamped;
    for (const l of [...this.listeners]) l(s);
  }
}
