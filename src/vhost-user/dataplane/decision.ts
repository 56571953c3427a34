// The switch's last decision for frames entering from one port: (destination,
// source) -> one port, or nowhere (null). It is reused while nothing that
// could change it changed: the same MAC table generation, topology epoch and
// coarse clock tick (so ageing and the source's refresh still happen every
// tick). A stream then skips both table lookups and the learning write, and
// its frames can go through the native fast path. One per ingress port, so
// that streams from several guests do not evict each other's decision at
// every batch.
export class Decision<P> {
  dst = -1;
  src = -1;
  gen = -1;
  epoch = -1;
  now = -1;
  to: P | null = null;
  /** With `to` null: the frames go out of the uplink (and only there), not nowhere. */
  up = false;
  /**
   * The stream looks like a run: the last frame from this port decided in
   * TypeScript hit the decision, and the fast path has not met other MACs
   * since without moving a frame. Streams interleaved frame by frame never
   * hit, and a native call that moves nothing would only add its cost to
   * each of their frames.
   */
  streak = false;
}
