// KernelBackend "bridge": bridge + tap, optionally creating the bridge
// (params.createBridge) so a user can ask for a bridge that does not exist yet.
import { existsSync } from 'node:fs';
import { NotFoundError } from '../../errors.js';
import { ip, linkDelete, linkShow } from '../../net/ip.js';
import { checkInterfaceName } from '../../net/ifname.js';
import { formatMac } from '../../net/mac.js';
import type { Availability, EndpointRequest, HostContext, KernelBackend, KernelEndpoint, OwnedObject } from '../types.js';
import type { Rollback } from '../../setup/rollback.js';
import { setupBridgeTap } from './bridge-tap.js';
import { setBridgePortVlan } from './vlan.js';

export const bridgeBackend: KernelBackend = {
  name: 'bridge',
  probe(req: Partial<EndpointRequest>, host: HostContext): Availability {
    if (!existsSync(host.tunDevice)) return { available: false, reason: `${host.tunDevice} is missing (tun module not loaded)` };
    if (!host.netAdmin) return { available: false, reason: 'no CAP_NET_ADMIN' };
    if (!req.dev) return { available: false, reason: 'no bridge given (--dev or --br)' };
    const l = linkShow(req.dev);
    if (!l) return req.params?.createBridge ? { available: true, reason: `bridge ${req.dev} will be created` } : { available: false, reason: `${req.dev} does not exist` };
    if (l.linkinfo?.info_kind !== 'bridge') return { available: false, reason: `${req.dev} is a ${l.linkinfo?.info_kind ?? 'device'}, not a bridge` };
    return { available: true, reason: `${req.dev} is a bridge` };
  },
  setup(req: EndpointRequest, host: HostContext, rb: Rollback): KernelEndpoint {
    if (!req.dev) throw new NotFoundError('bridge mode needs a bridge: pass --dev=BRIDGE (or --br)');
    const bridge = checkInterfaceName(req.dev, 'bridge');
    const owned: OwnedObject[] = [];
    if (req.params.createBridge && !linkShow(bridge)) {
      ip('link', 'add', bridge, 'type', 'bridge');
      const obj: OwnedObject = { kind: 'link', data: { ifname: bridge, onlyIfNoPorts: true } };
      rb.add(`delete bridge ${bridge}`, () => linkDelete(bridge), { backend: 'bridge', obj });
      if (req.mtu) ip('link', 'set', bridge, 'mtu', String(req.mtu));
      ip('link', 'set', bridge, 'up');
      owned.push(obj);
    }
    const ep = setupBridgeTap({ bridge, vnetHdr: req.vnetHdr, tunDevice: host.tunDevice, queues: req.queues, ...(req.persist ? { persist: { backend: 'bridge', remove: linkDelete } } : {}) }, rb);
    if (req.persist) owned.push({ kind: 'link', data: { ifname: ep.tap.name } });
    if (req.vlan) setBridgePortVlan(bridge, ep.tap.name, req.vlan);
    // The tap's own address (fe:...) is not the guest's; the guest MAC is what was asked for, if anything.
    return { kernel: 'bridge', ifname: ep.tap.name, fds: ep.queueFds, vnetHdr: ep.tap.vnetHdr, ...(req.mac ? { mac: formatMac(req.mac) } : {}), mtu: ep.mtu, owned, info: { bridge, tapMac: formatMac(ep.mac) } };
  },
  release(obj: OwnedObject): void {
    if (obj.kind !== 'link') return;
    const name = String(obj.data.ifname);
    // A bridge we created goes only when no guest uses it any more.
    if (obj.data.onlyIfNoPorts) {
      const ports = ip('-o', 'link', 'show', 'master', name).trim();
      if (ports) return;
    }
    linkDelete(name);
  },
};
