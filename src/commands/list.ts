import { QnhCommand } from '../cli/base.js';
import { processCaller } from '../access/caller.js';
import { needsBroker, viaBroker } from '../broker/client.js';
import { fail } from '../cli/fail.js';
import { processHost } from '../host/context.js';
import { listFor, type Listing } from '../lifecycle/list.js';
import { describeNetns } from '../net/netns.js';

export default class List extends QnhCommand {
  static override summary = 'List endpoints and SR-IOV VF claims with their owners and state (an unprivileged user: its own, through the broker).';
  static override enableJsonFlag = true;

  async run(): Promise<unknown> {
    await this.parse(List);
    try {
      const r = needsBroker() ? await viaBroker<Listing>({ v: 1, op: 'list' }) : listFor(processHost().stateDir, processCaller());
      if (!this.jsonEnabled()) {
        if (!r.endpoints.length && !r.vfClaims.length) this.log('no endpoints, no VF claims');
        for (const e of r.endpoints) {
          if ('corrupt' in e) { this.log(`${e.id}  UNREADABLE: ${e.corrupt}`); continue; }
          const owner = e.owner ? `pid ${e.owner.pid} (${e.ownerStatus})` : e.lifetime === 'fd' ? 'fd holder' : 'manual';
          const netns = e.netns ? `netns ${describeNetns(e.netns)}${e.netnsStatus === 'gone' ? ' GONE' : e.netnsStatus === 'here' ? ' (this one)' : ''}` : 'netns -';
          this.log(`${e.id}  ${e.mode}  ${e.kernel}/${e.transport}  ${e.ifname}  ${netns}  uid ${e.uid ?? 0}  owner ${owner}  ${String(e.info.state ?? '')}  owns: ${e.owned.map((o) => o.obj.kind).join(', ') || '-'}`);
        }
        for (const c of r.vfClaims) this.log(`VF ${JSON.stringify(c)}`);
      }
      return r;
    } catch (e) {
      fail(this, e);
    }
  }
}
