// Kernel implementation "cni-sandbox": releases what a CNI attachment put
// inside a sandbox (a link made or moved there), from the endpoint record
// alone, so the helper's `down` and `gc` can release CNI records too. It sets
// nothing up itself: src/cni/attach-*.ts make these objects.
import { SetupError } from '../../errors.js';
import type { Availability, KernelBackend, KernelEndpoint, OwnedObject } from '../types.js';
import { dataNumber, dataString } from './kerrors.js';
import { IpError } from '../../net/ip.js';
import { releaseLink } from './klink.js';
import { netnsExists, ownNetns, sip, sLink } from '../../net/netns-ip.js';

export const CNI_SANDBOX = 'cni-sandbox';
/** A link made in (or moved into) the sandbox: deleted there. */
export const KIND_SANDBOX_LINK = 'sandbox-link';
/** A device lent to the sandbox (a VF): moved back here under its host name. */
export const KIND_RETURN_LINK = 'return-link';
/** A link made on the host on its way into the sandbox (a macvlan under a temporary name). */
export const KIND_HOST_LINK = 'host-link';

function ours(netns: string, name: string, ifindex: number): boolean {
  if (!netnsExists(netns)) return false; // the sandbox is gone, and its virtual links with it
  const l = sLink(netns, name);
  return !!l && l.ifindex === ifindex;
}

export function releaseSandboxObject(obj: OwnedObject): void {
  if (obj.kind === KIND_HOST_LINK) {
    dataNumber(obj.data, 'ifindex', obj.kind); // identity: only the link we made
    releaseLink(obj, ['macvlan', 'macvtap']);
    return;
  }
  const netns = dataString(obj.data, 'netns', obj.kind);
  const name = dataString(obj.data, 'ifname', obj.kind);
  const ifindex = dataNumber(obj.data, 'ifindex', obj.kind);
  try {
    if (obj.kind === KIND_SANDBOX_LINK) {
      if (ours(netns, name, ifindex)) sip(netns, 'link', 'del', 'dev', name);
    } else if (obj.kind === KIND_RETURN_LINK) {
      const hostName = dataString(obj.data, 'hostIfname', obj.kind);
      // Down first: the host side expects the VF as it lent it (release restores its state).
      if (ours(netns, name, ifindex)) sip(netns, 'link', 'set', 'dev', name, 'down', 'netns', ownNetns(), 'name', hostName);
    } else {
      throw new SetupError(`the ${CNI_SANDBOX} kernel cannot release objects of kind '${obj.kind}'`);
    }
  } catch (e) {
    if (e instanceof IpError) throw new SetupError(`releasing ${name} in ${netns}: ${e.stderr.trim().split('\n')[0]}`);
    throw e;
  }
}

export const cniSandboxBackend: KernelBackend = {
  name: CNI_SANDBOX,
  yields: 'none',
  probe(): Availability { return { available: false, reason: 'made only by the CNI plugin (CNI_COMMAND=ADD)' }; },
  setup(): KernelEndpoint { throw new SetupError(`the ${CNI_SANDBOX} kernel is only used by the CNI plugin`); },
  release: (obj) => releaseSandboxObject(obj),
};
