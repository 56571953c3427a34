// The switch's counters as Prometheus metric families (`serve --metrics`):
// one sample per port and one for the uplink (port="uplink"), labelled with
// port, socket and owner ("uid:gid", empty when the port has none). Built
// from the same view `vhost-user stats` prints, so both always agree.
import type { Family, Sample } from '../metrics/exposition.js';
import { type Counters, type SwitchView } from './control/view.js';

const P = 'qemu_net_helper_switch_';

/** Counter name, help, and which PortStats field it exposes. */
const COUNTERS: [string, string, keyof Counters][] = [
  ['tx_frames_total', 'Frames taken from the port\'s TX rings (what its guest sent; for the uplink, what arrived from the device).', 'txFrames'],
  ['tx_native_frames_total', 'Of tx_frames_total, frames the C fast path moved.', 'txNative'],
  ['rx_frames_total', 'Frames delivered to the port (into its guest\'s RX rings; for the uplink, written to the device).', 'rxFrames'],
  ['tx_dropped_total', 'Frames the port sent that were dropped (malformed, or no room anywhere).', 'txDropped'],
  ['rx_dropped_total', 'Frames for the port that were dropped (its guest had no RX buffer).', 'rxDropped'],
  ['bad_chains_total', 'Descriptor chains refused as malformed or out of bounds.', 'badChains'],
];

export function switchFamilies(v: SwitchView): Family[] {
  const rows: { labels: Record<string, string>; stats: Counters }[] = v.ports.map((p) => ({
    labels: { port: String(p.port), socket: p.socket, owner: p.owner ? `${p.owner.uid}:${p.owner.gid}` : '' }, stats: p.stats,
  }));
  if (v.uplink) rows.push({ labels: { port: 'uplink', socket: v.uplink.device, owner: '' }, stats: v.uplink.stats });
  const per = (pick: (r: (typeof rows)[number]) => number): Sample[] => rows.map((r) => ({ labels: r.labels, value: pick(r) }));
  const portOnly = (pick: (p: SwitchView['ports'][number]) => number): Sample[] => v.ports.map((p) => ({
    labels: { port: String(p.port), socket: p.socket, owner: p.owner ? `${p.owner.uid}:${p.owner.gid}` : '' }, value: pick(p),
  }));
  return [
    ...COUNTERS.map(([name, help, field]): Family => ({ name: P + name, help, type: 'counter', samples: per((r) => r.stats[field]) })),
    { name: `${P}broken_queues`, help: 'Rings marked broken (nonsense indices) and no longer served.', type: 'gauge', samples: per((r) => r.stats.brokenQueues) },
    { name: `${P}port_connected`, help: '1 when a front-end is connected to the port.', type: 'gauge', samples: portOnly((p) => (p.connected ? 1 : 0)) },
    { name: `${P}port_ready`, help: '1 when the guest\'s rings are started (traffic can flow).', type: 'gauge', samples: portOnly((p) => (p.ready ? 1 : 0)) },
    { name: `${P}ports`, help: 'Ports of the switch (the uplink not counted).', type: 'gauge', samples: [{ value: v.ports.length }] },
    { name: `${P}learned_macs`, help: 'Entries in the MAC table.', type: 'gauge', samples: [{ value: v.macs.length }] },
  ];
}
