// How a record names a network namespace: the value only (its nsfs inode and a
// bind-mount hint). Finding or entering the namespace is net/netns.ts's job;
// state stores values and looks nothing up, so net can build on state.
import { z } from 'zod';

export interface NetnsRef {
  /** The namespace's nsfs inode, as `ls -i`/`ip netns identify`/`/proc/PID/ns/net -> net:[N]` show it. */
  inode: number;
  /** A bind mount of it when it had one at creation (/run/netns/NAME first), else null. */
  path: string | null;
}

/** A NetnsRef as records hold it: an inode, and an absolute path or null. */
export const netnsRefSchema = z.object({ inode: z.number().int().positive(), path: z.string().startsWith('/').nullable() });

export function isNetnsRef(v: unknown): v is NetnsRef { return netnsRefSchema.safeParse(v).success; }
