// An endpoint record is drafted before setup (so the journal can fill it step
// by step) and completed from the chosen candidate once setup succeeded.
import type { Choice } from '../policy/choose.js';
import { Rollback } from '../state/rollback.js';
import { ENDPOINT_VERSION, newEndpointId, saveEndpoint, type EndpointRecord } from '../state/endpoints.js';
import { selfOwner, type OwnerRef } from '../state/owner.js';
import { ownNetns } from './holders.js';
import { ownNetnsRef } from '../net/netns.js';

export function draftRecord(mode: string, owner: OwnerRef | null, id = newEndpointId()): EndpointRecord {
  return {
    version: ENDPOINT_VERSION, id, createdAt: new Date().toISOString(), owner, watcher: null,
    mode, kernel: '', transport: '', ifname: '', mac: null, mtu: 0, devicePath: null, owned: [],
    // Where down/gc must act later, whichever namespace they are run from.
    netns: ownNetnsRef(),
    // netns: where the endpoint's interfaces live, so the watcher never takes a
    // process of another namespace holding a tap of the same name for its user.
    info: { state: 'setting-up', setupBy: selfOwner(), netns: ownNetns() },
  };
}

/**
 * A rollback whose owned steps are appended to `record` and saved at once:
 * what outlives this process is on disk before the step that made it returns.
 */
export function journalingRollback(record: EndpointRecord, stateDir: string): Rollback {
  return new Rollback((owned) => {
    record.owned.push(owned);
    saveEndpoint(stateDir, record);
  });
}

export function completeRecord(record: EndpointRecord, choice: Choice): void {
  record.kernel = choice.endpoint.kernel;
  record.transport = choice.transport.transport;
  record.ifname = choice.endpoint.ifname;
  record.mac = choice.endpoint.mac ?? null;
  record.mtu = choice.endpoint.mtu;
  record.devicePath = choice.endpoint.devicePath ?? null;
  // The transport's facts (the fd QEMU holds: tap name, macvtap chardev) let the watcher find QEMU.
  record.info = { ...choice.endpoint.info, transport: choice.transport.info, state: 'active', netns: record.info.netns };
}
