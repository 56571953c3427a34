// The broker's counters for `daemon --metrics`: connections, requests by
// operation, result and exit code, and the endpoints on record (read from the
// state directory at scrape time). The broker calls connection() and
// request(); nothing here changes what the broker decides.
import type { Family } from '../metrics/exposition.js';
import { listEndpoints } from '../state/endpoints.js';

const P = 'qemu_net_helper_broker_';

export class BrokerMetrics {
  private connections = 0;
  private readonly requests = new Map<string, { op: string; exit: number; n: number }>();

  connection(): void { this.connections++; }

  /** One answered request; `op` is the request's op ("invalid" for one that did not parse). */
  request(op: string, exit: number): void {
    const k = `${op}\0${exit}`;
    const r = this.requests.get(k) ?? { op, exit, n: 0 };
    r.n++;
    this.requests.set(k, r);
  }

  families(stateDir: string): Family[] {
    let records = 0;
    let unreadable = 0;
    for (const e of listEndpoints(stateDir)) ('record' in e ? records++ : unreadable++);
    const reqs = [...this.requests.values()].sort((a, b) => a.op.localeCompare(b.op) || a.exit - b.exit);
    return [
      { name: `${P}connections_total`, help: 'Client connections accepted.', type: 'counter', samples: [{ value: this.connections }] },
      {
        name: `${P}requests_total`, help: 'Requests answered, by op (helper, up, down, list, gc; invalid: not a request), result (ok or error) and exit code (the README\'s table).', type: 'counter',
        samples: reqs.map((r) => ({ labels: { op: r.op, result: r.exit === 0 ? 'ok' : 'error', exit_code: String(r.exit) }, value: r.n })),
      },
      { name: `${P}endpoints`, help: 'Endpoint records in the state directory.', type: 'gauge', samples: [{ value: records }] },
      { name: `${P}unreadable_records`, help: 'Records in the state directory that could not be read.', type: 'gauge', samples: [{ value: unreadable }] },
    ];
  }
}
