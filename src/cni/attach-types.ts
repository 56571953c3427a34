// What every CNI transport module gets and gives: the checked config and
// environment, the host context and a journaling rollback in; the sandbox
// interface (plus any host-side ones) out.
import type { HostContext } from '../backends/types.js';
import type { Rollback } from '../state/rollback.js';
import type { NetConf } from './config.js';
import type { CniEnv } from './env.js';
import type { CniInterface, CniIp, CniRoute } from './result.js';

export interface AddContext {
  conf: NetConf;
  env: CniEnv;
  host: HostContext;
  rb: Rollback;
  /** The endpoint record's id (also the VF claim's endpoint id). */
  id: string;
  /** runtimeConfig.mac wins over the config's mac (the 'mac' capability). */
  mac?: string;
  /** IPAM's addresses, when there is IPAM (routed mode needs them before wiring). */
  ips?: CniIp[];
  /** IPAM's routes (mode nat completes them with its default route). */
  routes?: CniRoute[];
}

export interface Attached {
  /** Host-side interfaces first (no sandbox), the sandbox interface last. */
  hostInterfaces: CniInterface[];
  sandbox: CniInterface;
  /**
   * Whether the plugin puts the IPs on the sandbox interface (container
   * networking: veth, VF) or only reports them (a tap or macvtap for a VM in
   * the pod: the guest owns the address).
   */
  configureIp: boolean;
  /**
   * Addresses and routes the transport settled itself, replacing IPAM's
   * (mode nat: its own address without IPAM, the NAT gateway, a default route).
   */
  ips?: CniIp[];
  routes?: CniRoute[];
  /** Kernel implementation and host ifname, for the endpoint record (`list`). */
  kernel: string;
  hostIfname: string;
}
