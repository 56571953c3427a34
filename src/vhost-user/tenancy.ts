// Who may do what on the switch, as pure decisions: every port has an owner
// (uid, gid); root (or the uid the switch runs as) may do anything; a
// delegated control client acts only on ports it owns, never names another
// owner and never makes us connect() anywhere; a front-end may take a port
// only as its owner, as root, or (socket mode granting the group) as a
// member of the owner's primary group.
import { UsageError } from '../errors.js';
import { lookupGroup, lookupUser } from '../sys/nss.js';

export interface Owner { uid: number; gid: number }

/** A peer as SO_PEERCRED reports it. */
export interface Peer { uid: number; gid: number; pid?: number }

const selfUid = (): number => process.geteuid?.() ?? 0;

/** Root, or the user the switch itself runs as (who could do anything to it anyway). */
export function isAdmin(uid: number): boolean {
  return uid === 0 || uid === selfUid();
}

export function describeOwner(o: Owner): string { return `uid ${o.uid} gid ${o.gid}`; }

/** Why `client` may not act on a port of `owner`, or null when it may. */
export function actRefusal(client: Peer, owner: Owner, what: string): string | null {
  if (isAdmin(client.uid) || client.uid === owner.uid) return null;
  return `${what}: the port belongs to uid ${owner.uid}; uid ${client.uid} may act only on its own ports`;
}

/** The owner of a port a control client adds: what root names (undefined: the switch's default), else the client itself. */
export function ownerForAdd(client: Peer, asked: Owner | undefined): Owner | undefined {
  if (isAdmin(client.uid)) return asked;
  if (asked && (asked.uid !== client.uid || asked.gid !== client.gid)) {
    throw new UsageError(`add-port: "owner" ${describeOwner(asked)} is not the caller (uid ${client.uid} gid ${client.gid}); only root names another owner`, 'drop "owner": a port added by you is yours');
  }
  return { uid: client.uid, gid: client.gid };
}

/** Whether a front-end with these credentials may take a port of `owner` whose socket has `mode`. */
export function frontEndAllowed(peer: Peer, owner: Owner, mode: number): boolean {
  if (peer.uid === 0 || peer.uid === owner.uid) return true;
  return (mode & 0o060) !== 0 && peer.gid === owner.gid;
}

/** Whether `owner` may create and remove entries in a directory with this stat (by uid, primary gid or others). */
export function mayWriteDir(owner: Owner, dir: { uid: number; gid: number; mode: number }): boolean {
  if (owner.uid === 0) return true;
  if (dir.uid === owner.uid) return (dir.mode & 0o300) === 0o300;
  if (dir.gid === owner.gid) return (dir.mode & 0o030) === 0o030;
  return (dir.mode & 0o003) === 0o003;
}

/** "USER[:GROUP]" (names or numbers) -> owner; the group defaults to the user's primary group. */
export function parseOwnerSpec(text: string, flag = '--socket-owner'): Owner {
  const hint = "run 'qemu-net-helper vhost-user serve --help'";
  const m = /^([^:]+)(?::([^:]+))?$/.exec(text);
  if (!m) throw new UsageError(`${flag} '${text}' is not USER or USER:GROUP`, hint);
  const [, user, group] = m;
  const pw = lookupUser(user!);
  let uid: number;
  let gid: number | undefined;
  if (pw) {
    uid = pw.uid;
    gid = pw.gid;
  } else if (/^\d+$/.test(user!)) {
    uid = Number(user);
  } else {
    throw new UsageError(`${flag} '${text}': no such user`, hint);
  }
  if (group !== undefined) {
    const gr = /^\d+$/.test(group) ? null : lookupGroup(group);
    if (/^\d+$/.test(group)) gid = Number(group);
    else if (gr) gid = gr.gid;
    else throw new UsageError(`${flag} '${text}': no such group`, hint);
  }
  if (gid === undefined) throw new UsageError(`${flag} '${text}': uid ${uid} has no account to take a group from`, `give the group too: ${flag} ${user}:GROUP`);
  if (uid > 0xfffffffe || gid > 0xfffffffe) throw new UsageError(`${flag} '${text}': id out of range`, hint);
  return { uid, gid };
}
