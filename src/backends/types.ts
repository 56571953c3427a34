// The plug-in points. Policy (what the user wants), kernel implementation (how
// the host wires it) and transport (how QEMU gets the packets) are independent:
// a policy names (kernel, transport) candidates by name, the registries below
// resolve them, and adding one touches its module, its registry line and the
// policy file naming it; transports match on the kind a kernel yields.
import type { Rollback } from '../state/rollback.js';

export type Mode = 'veb' | 'vepa' | 'private' | 'bridge' | 'nat' | 'route' | 'passthrough';
export const MODES: readonly Mode[] = ['veb', 'vepa', 'private', 'bridge', 'nat', 'route', 'passthrough'];

export type TransportName = 'tap' | 'macvtap' | 'socket' | 'vhost-kernel' | 'vhost-user';

export type { HostContext } from '../host/context.js';
import type { HostContext } from '../host/context.js';

/** What the user asked for, after flags, profile and defaults were merged. */
export interface EndpointRequest {
  mode: Mode;
  /** Uplink / parent / bridge device, depending on the kernel implementation. */
  dev?: string;
  /** Guest MAC (6 bytes), when given; backends that need one generate a local one otherwise. */
  mac?: Buffer;
  mtu?: number;
  /** Offer a virtio-net header on the fd (QEMU's --use-vnet). */
  vnetHdr: boolean;
  queues: number;
  /** Candidate VFs: PF names or PCI addresses; empty means any PF under --dev. */
  vfPool?: string[];
  vlan?: number;
  spoofchk?: boolean;
  /** NAT/route parameters. */
  subnet?: string;
  guestIp?: string;
  /** Backend-specific parameters from the policy candidate. */
  params: Record<string, unknown>;
  /**
   * Everything must outlive this process (`up`): taps are made persistent and
   * become owned objects, since no QEMU holds an fd on them yet.
   */
  persist?: boolean;
}

export type { OwnedObject } from '../state/owned.js';
import type { OwnedObject } from '../state/owned.js';

export interface KernelEndpoint {
  kernel: string;
  /** The host-side interface the guest's frames appear on (tap, macvtap, VF netdev, veth end). */
  ifname: string;
  /** Character device QEMU may open itself (macvtap: /dev/tapN), when there is one. */
  devicePath?: string;
  /** Open fds for the transport (tap/macvtap queue fds); closed by the caller after sending. */
  fds: number[];
  vnetHdr: boolean;
  mac?: string;
  mtu: number;
  /** Objects to remove when the endpoint's owner goes away (watcher, down, gc). */
  owned: OwnedObject[];
  /** Free-form facts for `up --json` and the extended protocol. */
  info: Record<string, unknown>;
}

export interface Availability {
  available: boolean;
  reason: string;
}

/**
 * What a kernel implementation hands a transport: transports match on this,
 * never on kernel names, so a new kernel implementation that yields a known
 * kind is its module, its registry line and the policy file naming it.
 */
export type EndpointKind =
  /** Open tap queue fds (bridge, route, nat). */
  | 'tap'
  /** Open macvtap queue fds. */
  | 'macvtap'
  /** A host netdev with no fd yet, for a transport to stack one on (an SR-IOV VF). */
  | 'netdev'
  /** The host end of a veth pair, whose frames a relay carries. */
  | 'veth'
  /** A port of our vhost-user switch. */
  | 'vswitch-port'
  /** Nothing a transport can carry (cni-sandbox: it only releases what CNI made). */
  | 'none';

export interface KernelBackend {
  readonly name: string;
  /** The kind of endpoint setup() yields (what a transport needs to accept it). */
  readonly yields: EndpointKind;
  /** Cheap capability check for `probe` and candidate selection; must not change anything. */
  probe(req: Partial<EndpointRequest>, host: HostContext): Availability;
  /** Makes the endpoint, registering an undo on `rb` for every object as soon as it exists. */
  setup(req: EndpointRequest, host: HostContext, rb: Rollback): KernelEndpoint;
  /**
   * Removes one owned object; idempotent: already gone is success. Checks the
   * object still is the one we made (kind, ifindex, marker) first: one that is
   * not is left alone, and a string saying why is returned instead.
   */
  release(obj: OwnedObject, host: HostContext): void | string;
}

/** What a transport hands the caller: fds for QEMU plus facts for the JSON reply. */
export interface TransportResult {
  transport: TransportName;
  fds: number[];
  vnetHdrSize: number;
  queues: number;
  info: Record<string, unknown>;
}

export interface Transport {
  readonly name: TransportName;
  /** Whether this transport can run here at all (device present, ...). */
  probe(host: HostContext): Availability;
  /** Whether it can carry an endpoint of this kind (e.g. tap needs tap fds). */
  accepts(kind: EndpointKind): boolean;
  /** Turns the kernel endpoint into fds for QEMU; undo steps go on rb. */
  attach(ep: KernelEndpoint, req: EndpointRequest, host: HostContext, rb: Rollback): TransportResult;
}
