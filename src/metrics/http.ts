// The metrics endpoint: a small node:http server answering GET /metrics with
// the exposition text, on a unix socket path (permissions decide who reads)
// or on IP:PORT (loopback by default in the docs). Bounded: few connections,
// short timeouts, no request bodies read.
import { createServer, type Server } from 'node:http';
import { isIP } from 'node:net';
import { UsageError } from '../errors.js';
import { listenOwned, removeIfOurs, type OwnedSocket, type SocketAccess } from '../vhost-user/socket-path.js';

export interface MetricsEndpoint { where: string; close(): Promise<void> }

/** "PATH" (absolute) or "IP:PORT" / "[IPv6]:PORT" -> where to listen. */
export function parseMetricsAddress(text: string, flag = '--metrics'): { path: string } | { host: string; port: number } {
  if (text.startsWith('/')) return { path: text };
  const m = /^(?:\[([^\]]+)\]|([^:[\]]+)):(\d{1,5})$/.exec(text);
  const host = m ? (m[1] ?? m[2])! : '';
  const port = m ? Number(m[3]) : -1;
  if (!m || isIP(host) === 0 || port > 65535) throw new UsageError(`${flag} '${text}' is neither an absolute socket path nor IP:PORT`, `e.g. ${flag} /run/qemu-net-helper/switch-metrics.sock or ${flag} 127.0.0.1:9469`);
  return { host, port };
}

/** `access`: the unix socket's mode and group (the switch passes its --socket-mode/--socket-group). */
export async function serveMetrics(address: string, render: () => Promise<string> | string, onError: (m: string) => void, access: SocketAccess = {}): Promise<MetricsEndpoint> {
  const where = parseMetricsAddress(address);
  const server: Server = createServer((req, res) => {
    const path = (req.url ?? '').split('?')[0];
    if (path !== '/metrics') { res.writeHead(404, { 'content-type': 'text/plain' }).end('try /metrics\n'); return; }
    if (req.method !== 'GET' && req.method !== 'HEAD') { res.writeHead(405, { allow: 'GET, HEAD' }).end(); return; }
    Promise.resolve().then(render).then((text) => {
      res.writeHead(200, { 'content-type': 'text/plain; version=0.0.4; charset=utf-8' }).end(req.method === 'HEAD' ? undefined : text);
    }, (e: unknown) => {
      onError(`metrics: ${(e as Error).message}`);
      res.writeHead(500, { 'content-type': 'text/plain' }).end('metrics unavailable\n');
    });
  });
  server.maxConnections = 16;
  server.headersTimeout = 10_000;
  server.requestTimeout = 10_000;
  server.keepAliveTimeout = 5_000;
  let owned: OwnedSocket | null = null;
  let shown: string;
  if ('path' in where) {
    owned = listenOwned(where.path, access, '--metrics');
    await new Promise<void>((resolve, reject) => { server.once('error', reject); server.listen({ fd: owned!.fd }, () => { server.off('error', reject); resolve(); }); });
    shown = where.path;
  } else {
    await new Promise<void>((resolve, reject) => {
      server.once('error', (e: NodeJS.ErrnoException) => reject(new UsageError(`--metrics ${address}: cannot listen (${e.code ?? e.message})`, 'pass a free port on an address of this host')));
      server.listen(where.port, where.host, () => resolve());
    });
    const a = server.address();
    shown = a && typeof a === 'object' ? `${a.family === 'IPv6' ? `[${a.address}]` : a.address}:${a.port}` : address;
  }
  return {
    where: shown,
    close: () => new Promise<void>((resolve) => {
      server.closeAllConnections();
      server.close(() => { if (owned) removeIfOurs(owned); resolve(); });
    }),
  };
}
