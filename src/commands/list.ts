import { Command } from '@oclif/core';
import { processHost } from '../host/context.js';
import { endpointOwnerStatus, listEndpoints } from '../state/endpoints.js';
import { listClaims } from '../state/vf-claims.js';

export default class List extends Command {
  static override summary = 'List endpoints and SR-IOV VF claims with their owners and state.';
  static override enableJsonFlag = true;

  async run(): Promise<unknown> {
    await this.parse(List);
    const host = processHost();
    const endpoints = listEndpoints(host.stateDir).map((e) => ('corrupt' in e
      ? { id: e.id, corrupt: e.corrupt, file: e.file }
      : { ...e.record, ownerStatus: endpointOwnerStatus(e.record) }));
    const claims = listClaims(host.stateDir);
    if (!this.jsonEnabled()) {
      if (!endpoints.length && !claims.length) this.log('no endpoints, no VF claims');
      for (const e of endpoints) {
        if ('corrupt' in e) { this.log(`${e.id}  UNREADABLE: ${e.corrupt}`); continue; }
        const owner = e.owner ? `pid ${e.owner.pid} (${e.ownerStatus})` : 'manual';
        this.log(`${e.id}  ${e.mode}  ${e.kernel}/${e.transport}  ${e.ifname}  owner ${owner}  ${String(e.info.state ?? '')}  owns: ${e.owned.map((o) => o.obj.kind).join(', ') || '-'}`);
      }
      for (const c of claims) this.log(`VF ${JSON.stringify(c)}`);
    }
    return { endpoints, vfClaims: claims };
  }
}
