// Name -> implementation. Policies refer to these names; adding a kernel
// implementation or transport is one module plus one line here.
import type { KernelBackend, Transport } from './types.js';
import { bridgeBackend } from './kernel/bridge.js';
import { sriovBackend } from './kernel/sriov.js';
import { macvtapBackend } from './kernel/macvtap.js';
import { vethBackend } from './kernel/veth.js';
import { routeBackend } from './kernel/route.js';
import { natBackend } from './kernel/nat.js';
import { vswitchBackend } from './kernel/vswitch.js';
import { cniSandboxBackend } from './kernel/cni-sandbox.js';
import { macvtapTransport } from './transport/macvtap.js';
import { socketTransport } from './transport/socket.js';
import { tapTransport } from './transport/tap.js';
import { vhostKernelTransport } from './transport/vhost-kernel.js';
import { vhostUserTransport } from './transport/vhost-user.js';

export const kernels: ReadonlyMap<string, KernelBackend> = new Map<string, KernelBackend>([
  [bridgeBackend.name, bridgeBackend],
  [sriovBackend.name, sriovBackend],
  [macvtapBackend.name, macvtapBackend],
  [vethBackend.name, vethBackend],
  [routeBackend.name, routeBackend],
  [natBackend.name, natBackend],
  [vswitchBackend.name, vswitchBackend],
  [cniSandboxBackend.name, cniSandboxBackend],
]);

export const transports: ReadonlyMap<string, Transport> = new Map<string, Transport>([
  [tapTransport.name, tapTransport],
  [macvtapTransport.name, macvtapTransport],
  [socketTransport.name, socketTransport],
  [vhostKernelTransport.name, vhostKernelTransport],
  [vhostUserTransport.name, vhostUserTransport],
]);
