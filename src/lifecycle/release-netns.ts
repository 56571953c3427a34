// Releasing an endpoint made in another network namespace: `down ID --json`
// run inside it through nsenter (util-linux), so that every step (iproute2,
// ioctls, nft) sees the namespace the objects are in. This process never
// changes namespace itself: Node's threads would not all follow a setns.
import { spawnSync } from 'node:child_process';
import { childEnv, systemBinary, type HostContext } from '../host/context.js';
import { binPath } from '../paths.js';
import type { EndpointRecord } from '../state/endpoints.js';
import type { ReleaseReport } from './release.js';

/** Set in the child: it must find itself in the recorded namespace, never hop again. */
const IN_NETNS_ENV = 'QEMU_NET_HELPER_IN_NETNS';

function failure(rec: EndpointRecord, why: string): ReleaseReport {
  return { id: rec.id, released: [], skipped: [], failed: [`in network namespace ${rec.netns ? `net:[${rec.netns.inode}]` : '?'}: ${why}`] };
}

export function releaseInNetns(rec: EndpointRecord, host: HostContext, path: string): ReleaseReport {
  if (process.env[IN_NETNS_ENV] !== undefined) return failure(rec, `entered ${path} but this is not that namespace`);
  const nsenter = systemBinary('nsenter');
  if (!nsenter) return failure(rec, "'nsenter' (util-linux) is not installed in the system directories");
  const r = spawnSync(nsenter, [`--net=${path}`, '--', process.execPath, binPath(), 'down', rec.id, '--json'], {
    encoding: 'utf8', env: { ...childEnv(host), [IN_NETNS_ENV]: String(rec.netns?.inode ?? 0) }, timeout: 120_000,
  });
  let report: (ReleaseReport & { error?: { message?: string } }) | null = null;
  try { report = JSON.parse(r.stdout) as ReleaseReport & { error?: { message?: string } }; } catch { /* below */ }
  if (report && Array.isArray(report.released) && Array.isArray(report.failed)) return { id: rec.id, released: report.released, skipped: report.skipped ?? [], failed: report.failed };
  const why = report?.error?.message ?? (r.stderr.trim().split('\n').pop() || r.error?.message || `exit status ${String(r.status)}`);
  return failure(rec, why.replace(/^qemu-net-helper: /, ''));
}
