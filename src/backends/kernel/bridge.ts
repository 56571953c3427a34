// KernelBackend "bridge": bridge + tap, optionally creating the bridge
// (params.createBridge) so a user can ask for a bridge that does not exist yet.
import { existsSync } from 'node:fs';
import { NotFoundError, SetupError } from '../../errors.js';
import { ip, linkDelete, linkShow } from '../../net/ip.js';
import { checkInterfaceName } from '../../net/ifname.js';
import { formatMac } from '../../net/mac.js';
import { ifIndex } from '../../sys/netdev.js';
import type { Availability, EndpointRequest, HostContext, KernelBackend, KernelEndpoint, OwnedObject } from '../types.js';
import type { Rollback } from '../../state/rollback.js';
import { setupBridgeTap } from './bridge-tap.js';
import { kernelFailure } from './kerrors.js';
import { identityMismatch, KIND_LINK, linkMarker, linkOrNull, markLink, recordedIdentity, releaseLink } from './klink.js';

/** Deletes a bridge we created, if it still is ours and no port is left on it. */
function releaseCreatedBridge(obj: OwnedObject): string | undefined {
  const id = recordedIdentity(obj.data);
  if (typeof id === 'string') return `left alone: ${id}`;
  const l = linkOrNull(id.ifname);
  if (!l) return undefined;
  const bad = identityMismatch(l, id, ['bridge']);
  if (bad) return `left alone: ${bad}`;
  // A bridge we created goes only when no guest uses it any more.
  if (ip('-o', 'link', 'show', 'master', id.ifname).trim()) return `kept: bridge '${id.ifname}' still has ports`;
  try {
    linkDelete(id.ifname);
  } catch (e) {
    kernelFailure(e, `deleting bridge '${id.ifname}'`);
  }
  return undefined;
}

function releaseBridgeObject(obj: OwnedObject): string | undefined {
  if (obj.kind !== KIND_LINK) throw new SetupError(`the bridge kernel cannot release objects of kind '${obj.kind}'`);
  return obj.data.onlyIfNoPorts ? releaseCreatedBridge(obj) : releaseLink(obj, ['tun']);
}
import { setBridgePortVlan } from './vlan.js';

export const bridgeBackend: KernelBackend = {
  name: 'bridge',
  yields: 'tap',
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
    const marker = linkMarker(req.params, 'bridge');
    const owned: OwnedObject[] = [];
    if (req.params.createBridge && !linkShow(bridge)) {
      ip('link', 'add', bridge, 'type', 'bridge');
      // Marked before it is journaled: the record names only what carries our marker.
      markLink(bridge, marker);
      const obj: OwnedObject = { kind: KIND_LINK, data: { ifname: bridge, ifindex: ifIndex(bridge), marker, onlyIfNoPorts: true } };
      rb.add(`delete bridge ${bridge}`, () => { releaseCreatedBridge(obj); }, { backend: 'bridge', obj });
      if (req.mtu) ip('link', 'set', bridge, 'mtu', String(req.mtu));
      ip('link', 'set', bridge, 'up');
      owned.push(obj);
    }
    const persist = req.persist ? { persist: { backend: 'bridge', marker, mark: markLink, release: releaseBridgeObject } } : {};
    const ep = setupBridgeTap({ bridge, vnetHdr: req.vnetHdr, tunDevice: host.tunDevice, queues: req.queues, ...persist }, rb);
    if (ep.owned) owned.push(ep.owned);
    if (req.vlan) setBridgePortVlan(bridge, ep.tap.name, req.vlan);
    // The tap's own address (fe:...) is not the guest's; the guest MAC is what was asked for, if anything.
    return { kernel: 'bridge', ifname: ep.tap.name, fds: ep.queueFds, vnetHdr: ep.tap.vnetHdr, ...(req.mac ? { mac: formatMac(req.mac) } : {}), mtu: ep.mtu, owned, info: { bridge, tapMac: formatMac(ep.mac) } };
  },
  release: (obj: OwnedObject) => releaseBridgeObject(obj),
};
