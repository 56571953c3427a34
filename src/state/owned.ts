// What outlives the process that made it, as records keep it: the bottom of
// the dependency graph (kernel implementations, the rollback journal and the
// endpoint records all speak it).

/** A host object that outlives QEMU's fd and must be removed on teardown. */
export interface OwnedObject {
  kind: string;
  /** Enough to undo it later, from another process (watcher, gc): plain JSON. */
  data: Record<string, unknown>;
}

/** An owned object and the kernel implementation that can release it. */
export interface OwnedBy {
  backend: string;
  obj: OwnedObject;
}
