// A hostile tenant's attacks on the vhost-user switch, round after round
// (run as that user through switch-tenant.ts): on the delegated control
// socket, others' ports set-mode'd and removed, a port planted in a root-only
// directory, "client":true and another owner asked for; its front-end on each
// of the others' ports; then on a port of its own, a 64 TiB SET_MEM_TABLE and
// a loop of 128 GiB remaps. Each outcome is checked: a breach is reported.
import { join } from 'node:path';
import { Req } from '../../src/vhost-user/protocol/index.js';
import { closeFd } from '../../src/sys/libc.js';
import { ensureShrinkSeal } from '../../src/sys/seals.js';
import * as F from './frontend-codec.js';
import { memfdCreate, VhostFrontend } from './vhost-frontend.js';

export interface AttackJob {
  kind: 'attack';
  /** The delegated control socket. */
  control: string;
  /** Others' ports: number and socket (world-connectable: only the switch's own check stands). */
  victims: { port: number; socket: string }[];
  /** A directory the tenant may not write. */
  rootOnly: string;
  /** The tenant's own directory, for its own port. */
  ownDir: string;
  /** SET_MEM_TABLEs of 128 GiB sent at once per round. */
  remaps?: number;
}

type Reply = { ok?: boolean; error?: string; noReply?: boolean; ports?: { port: number }[] };
export interface AttackOps {
  control: (job: { kind: 'control'; path: string; requests: object[] }) => Promise<unknown>;
  frontend: (job: { kind: 'frontend'; path: string; holdMs?: number }) => Promise<unknown>;
}

export interface AttackReport {
  rounds: number;
  /** Per attack: how often refused (or harmless) as it should be. */
  refused: Record<string, number>;
  /** Attacks that got through, with what the switch answered. */
  breaches: string[];
  /** SET_MEM_TABLE acks of the remap loop: accepted (0) and refused. */
  remapAccepted: number;
  remapRefused: number;
}

export async function attack(job: AttackJob, ops: AttackOps): Promise<AttackReport> {
  const r: AttackReport = { rounds: 0, refused: {}, breaches: [], remapAccepted: 0, remapRefused: 0 };
  const refused = (what: string): void => { r.refused[what] = (r.refused[what] ?? 0) + 1; };
  const expectRefused = (what: string, reply: Reply | undefined): void => {
    if (reply && reply.ok === false) refused(what);
    else r.breaches.push(`${what}: ${JSON.stringify(reply)}`);
  };
  let stopped = false;
  process.stdin.on('end', () => { stopped = true; }).on('error', () => { stopped = true; }).resume();
  while (!stopped) {
    r.rounds++;
    const mine = join(job.ownDir, `mine${r.rounds}.sock`);
    const v = job.victims;
    const requests = [
      { op: 'list' },
      ...v.flatMap((x) => [{ op: 'set-mode', port: x.port, mode: 'private' }, { op: 'remove-port', port: x.port }, { op: 'remove-port', socket: x.socket }]),
      { op: 'add-port', socket: join(job.rootOnly, 'planted.sock') },
      { op: 'add-port', socket: v[0]!.socket, client: true },
      { op: 'add-port', socket: join(job.ownDir, 'as-root.sock'), owner: { uid: 0, gid: 0 } },
      { op: 'add-port', socket: mine },
    ];
    const { replies } = (await ops.control({ kind: 'control', path: job.control, requests })) as { replies?: Reply[] };
    // The switch gone (the test ended early): nothing left to attack.
    if (!replies) { r.breaches.push('the control socket could not be reached'); break; }
    const seen = (replies[0]?.ports ?? []).map((p) => p.port).filter((p) => v.some((x) => x.port === p));
    if (replies[0]?.ok !== true || seen.length) r.breaches.push(`list showed others' ports: ${JSON.stringify(replies[0])}`); else refused('list of others');
    v.forEach((x, i) => {
      expectRefused('set-mode of another', replies[1 + 3 * i]);
      expectRefused('remove-port of another', replies[2 + 3 * i]);
      expectRefused('remove-port of another by socket', replies[3 + 3 * i]);
    });
    const k = 1 + 3 * v.length;
    expectRefused('add-port in a root-only dir', replies[k]);
    expectRefused('add-port client:true', replies[k + 1]);
    expectRefused('add-port owned by root', replies[k + 2]);
    const own = replies[k + 3] as Reply & { port?: number };
    for (const x of v) {
      const fe = (await ops.frontend({ kind: 'frontend', path: x.socket, holdMs: 5000 })) as { closedBySwitch?: boolean };
      if (fe.closedBySwitch === true) refused('front-end on another\'s port');
      else r.breaches.push(`front-end on port ${x.port}: ${JSON.stringify(fe)}`);
    }
    if (own?.ok !== true) { r.breaches.push(`own port refused: ${JSON.stringify(own)}`); continue; }
    await memoryAttacks(mine, job.remaps ?? 10, r, refused);
    const [gone] = ((await ops.control({ kind: 'control', path: job.control, requests: [{ op: 'remove-port', port: own.port }] })) as { replies: Reply[] }).replies;
    if (gone?.ok !== true) r.breaches.push(`own port not removed: ${JSON.stringify(gone)}`);
  }
  return r;
}

/** On its own port: a 64 TiB table (refused at once), then `remaps` 128 GiB tables at once (the owner's budget). */
async function memoryAttacks(socket: string, remaps: number, r: AttackReport, refused: (what: string) => void): Promise<void> {
  const fe = await VhostFrontend.connectReady(socket, 10_000);
  const fds: number[] = [];
  try {
    await fe.set(Req.SET_OWNER);
    await fe.negotiateProtocol();
    const huge = memfdCreate('qnh-soak-64t', 2 ** 46);
    fds.push(huge);
    ensureShrinkSeal(huge);
    const hugeTable = F.memTable([{ guestPhysAddr: 0n, memorySize: 2n ** 46n, userspaceAddr: 0x7f00_0000_0000n, mmapOffset: 0n }]);
    if (await fe.ack(Req.SET_MEM_TABLE, hugeTable, [huge]) !== 0n) refused('64 TiB memory table');
    else r.breaches.push('a 64 TiB memory table was accepted');
    const big = memfdCreate('qnh-soak-128g', 2 ** 37);
    fds.push(big);
    ensureShrinkSeal(big);
    const table = F.memTable([{ guestPhysAddr: 0n, memorySize: 2n ** 37n, userspaceAddr: 0x7f00_0000_0000n, mmapOffset: 0n }]);
    for (let i = 0; i < remaps; i++) fe.request(Req.SET_MEM_TABLE, table, [big], true);
    for (let i = 0; i < remaps; i++) {
      const ack = F.replyU64(await fe.expectReply(Req.SET_MEM_TABLE, 60_000));
      if (ack === 0n) r.remapAccepted++; else r.remapRefused++;
    }
  } finally {
    fe.close();
    for (const fd of fds) closeFd(fd);
  }
}
