// Moving a host link into the sandbox under CNI_IFNAME, and bringing it up
// there with the requested MAC and MTU: shared by every transport.
import { ConfigError } from '../errors.js';
import { ip, IpError } from '../net/ip.js';
import { kernelFailure, ipReason } from '../backends/kernel/kerrors.js';
import { sip, sLink } from '../net/netns-ip.js';

export interface MovedLink { ifindex: number; mac: string; mtu: number }

export function moveIntoSandbox(hostName: string, netns: string, ifname: string): void {
  if (sLink(netns, ifname)) throw new ConfigError(`an interface named '${ifname}' already exists in ${netns}`, 'CNI_IFNAME must be free in the sandbox');
  try {
    ip('link', 'set', 'dev', hostName, 'netns', netns, 'name', ifname);
  } catch (e) {
    if (e instanceof IpError && /File exists/i.test(ipReason(e))) throw new ConfigError(`an interface named '${ifname}' already exists in ${netns}`);
    kernelFailure(e, `moving '${hostName}' into ${netns} as '${ifname}'`);
  }
}

/** MAC and MTU set (when given), link up; what it ended up as. */
export function configureInSandbox(netns: string, ifname: string, mac?: string, mtu?: number): MovedLink {
  try {
    if (mac) sip(netns, 'link', 'set', 'dev', ifname, 'address', mac);
    if (mtu !== undefined) sip(netns, 'link', 'set', 'dev', ifname, 'mtu', String(mtu));
    sip(netns, 'link', 'set', 'dev', ifname, 'up');
  } catch (e) {
    kernelFailure(e, `configuring '${ifname}' in ${netns}`);
  }
  const l = sLink(netns, ifname);
  if (!l) throw new ConfigError(`'${ifname}' vanished from ${netns} right after it was configured`);
  return { ifindex: l.ifindex, mac: l.address ?? '', mtu: l.mtu };
}
