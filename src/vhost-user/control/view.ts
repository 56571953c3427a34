// What the `vhost-user show|ports|fdb|stats` commands print, pure: the
// switch's `list` reply checked (zod) into a typed view, then tables for
// people or flat objects for programs. Unit-tested on reply fixtures.
import { z } from 'zod';

const counters = z.object({
  txFrames: z.number(), txNative: z.number(), rxFrames: z.number(), txDropped: z.number(),
  rxDropped: z.number(), badChains: z.number(), brokenQueues: z.number(),
});
export type Counters = z.infer<typeof counters>;
const COUNTER_NAMES = Object.keys(counters.shape) as (keyof Counters)[];

const owner = z.object({ uid: z.number().int(), gid: z.number().int() });
// Loose: fields a newer switch adds pass through to --json untouched.
const portView = z.looseObject({
  port: z.number().int(), socket: z.string(), client: z.boolean(), mode: z.string(),
  connected: z.boolean(), ready: z.boolean(), owner: owner.optional(), stats: counters,
});
const uplinkView = z.looseObject({ port: z.literal('uplink'), kind: z.string(), device: z.string(), ifname: z.string(), tx: z.string().optional(), stats: counters });
const macView = z.looseObject({ mac: z.string(), port: z.union([z.number().int().min(0), z.literal('uplink')]), ageMs: z.number().optional() });
const listReply = z.looseObject({ ports: z.array(portView), uplink: uplinkView.nullable(), macs: z.array(macView) });

export type PortView = z.infer<typeof portView>;
export type SwitchView = z.infer<typeof listReply>;

/** The `list` reply -> a view; an error naming the first field that does not fit (a switch of another version). */
export function parseList(reply: unknown): SwitchView {
  const r = listReply.safeParse(reply);
  if (!r.success) {
    const i = r.error.issues[0]!;
    throw new Error(`unexpected list reply from the switch: ${i.path.join('.') || '(top)'}: ${i.message}`);
  }
  return r.data;
}

/** What a port is doing: `ready` (rings started), `connected`, or waiting for its front-end. */
function portState(p: PortView): string {
  if (p.ready) return 'ready';
  if (p.connected) return 'connected';
  return p.client ? 'connecting' : 'listening';
}

const ownerText = (o: PortView['owner']): string => (o ? `${o.uid}:${o.gid}` : '-');

/** "12.3s", "4m05s": a MAC entry's age for people. */
export function ageText(ms: number | undefined): string {
  if (ms === undefined) return '-';
  const s = ms / 1000;
  if (s < 60) return `${s.toFixed(1)}s`;
  return `${Math.floor(s / 60)}m${String(Math.floor(s % 60)).padStart(2, '0')}s`;
}

/** Left-aligned columns, two spaces apart, header first. */
function table(header: string[], rows: string[][]): string {
  const all = [header, ...rows];
  const widths = header.map((_, c) => Math.max(...all.map((r) => (r[c] ?? '').length)));
  return all.map((r) => r.map((cell, c) => (c === r.length - 1 ? cell : cell.padEnd(widths[c]!))).join('  ')).join('\n') + '\n';
}

const macsOf = (v: SwitchView, port: number | 'uplink'): string[] => v.macs.filter((m) => m.port === port).map((m) => m.mac).sort();

export function portsText(v: SwitchView): string {
  if (v.ports.length === 0) return 'no ports\n';
  return table(['PORT', 'SOCKET', 'OWNER', 'MODE', 'STATE', 'TX', 'RX', 'DROPPED', 'MACS'], v.ports.map((p) => [
    String(p.port), p.socket, ownerText(p.owner), p.mode, portState(p), String(p.stats.txFrames), String(p.stats.rxFrames),
    String(p.stats.txDropped + p.stats.rxDropped), macsOf(v, p.port).join(',') || '-',
  ]));
}

/** The whole switch: uplink, then the ports with their learned MACs. */
export function showText(v: SwitchView, control: string): string {
  const u = v.uplink;
  const head = `switch ${control}: ${v.ports.length} port(s), ${v.macs.length} learned MAC(s)\n`
    + (u ? `uplink: ${u.kind === 'tap' ? `tap ${u.ifname} on bridge ${u.device}` : `packet socket on ${u.device}${u.tx ? ` (out: ${u.tx})` : ''}`}, tx ${u.stats.txFrames} rx ${u.stats.rxFrames} dropped ${u.stats.txDropped + u.stats.rxDropped}, MACs ${macsOf(v, 'uplink').join(',') || '-'}\n`
      : 'uplink: none\n');
  return `${head}${portsText(v)}`;
}

export function fdbText(v: SwitchView): string {
  if (v.macs.length === 0) return 'no learned MACs\n';
  const socket = (port: number | 'uplink'): string => (port === 'uplink' ? v.uplink?.device ?? '-' : v.ports.find((p) => p.port === port)?.socket ?? '-');
  const sorted = [...v.macs].sort((a, b) => String(a.port).localeCompare(String(b.port), 'en', { numeric: true }) || a.mac.localeCompare(b.mac));
  return table(['PORT', 'MAC', 'AGE', 'SOCKET'], sorted.map((m) => [String(m.port), m.mac, ageText(m.ageMs), socket(m.port)]));
}

/** One flat row per port, then the uplink's: what `stats --json` prints. */
export function statsRows(v: SwitchView): ({ port: number | 'uplink'; socket: string; owner?: PortView['owner'] } & Counters)[] {
  const rows: ({ port: number | 'uplink'; socket: string; owner?: PortView['owner'] } & Counters)[] =
    v.ports.map((p) => ({ port: p.port, socket: p.socket, ...(p.owner ? { owner: p.owner } : {}), ...p.stats }));
  if (v.uplink) rows.push({ port: 'uplink', socket: v.uplink.device, ...v.uplink.stats });
  return rows;
}

export function statsText(v: SwitchView): string {
  const rows = statsRows(v);
  if (rows.length === 0) return 'no ports\n';
  return table(['PORT', 'SOCKET', ...COUNTER_NAMES], rows.map((r) => [String(r.port), r.socket, ...COUNTER_NAMES.map((k) => String(r[k]))]));
}

/** One labelled log line per port and the uplink (`serve --stats-interval`). */
export function statsLines(v: SwitchView): string[] {
  return statsRows(v).map((r) => `stats port=${r.port} socket=${r.socket} ${COUNTER_NAMES.map((k) => `${k}=${r[k]}`).join(' ')}`);
}
