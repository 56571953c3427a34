// The per-frame loop of the switch's hot path in C: guest TX chain -> another
// guest's RX buffer, for the one case that carries almost all traffic (a
// frame in one descriptor, into one writable descriptor, between two ports
// whose forwarding decision the switch has already taken and cached).
//
// Why C: the same loop in JavaScript (virtq/walk.ts, net.ts, switch-core.ts)
// runs at 0.4-0.5x DPDK's vhost back-end with 64-byte frames; what is left
// there is bounds-checked typed-array access and DataView byte copies, which
// the JIT cannot make cheaper. Everything that is not the common case (chained
// or indirect descriptors, mergeable multi-buffer delivery, dirty logging,
// flooding, learning, drops, broken rings) stays in TypeScript: this function
// stops in front of such a frame without consuming it, and the caller handles
// that frame the general way. It never marks a ring broken, never drops.
//
// The guest is hostile and runs concurrently: every ring index, descriptor
// and length is read once into a local, checked, then used; every buffer is
// translated through the region table and must lie entirely inside one
// region. Ring positions are validated by the caller (SplitQueue.setMemory)
// when it builds the ring block.
#include "ring.h"

int qnh_abi(void) { return QNH_ABI; }

// The address of a buffer koffi passes in (the backing store of an
// ArrayBuffer does not move), so blocks can be handed over as numbers.
uintptr_t qnh_address(const void *p) { return (uintptr_t)p; }

// Moves up to `max` frames from tx to rx while each is one readable
// descriptor carrying a frame from MAC `src` to MAC `dst` (48-bit numbers)
// and rx's next buffer is one writable descriptor that holds it. Headers:
// tx_hdr/rx_hdr bytes (10 or 12). Used entries are written, not published:
// the caller publishes used.idx (a release store) and notifies. Returns the
// frames moved; tx->stop says why it stopped. Block addresses come as
// doubles (exact below 2^53) because koffi passes those fastest.
int qnh_forward(double tx_block, double rx_block, uint32_t max, uint32_t tx_hdr, uint32_t rx_hdr,
                double dst_mac, double src_mac) {
  struct qnh_ring *tx = (struct qnh_ring *)(uintptr_t)tx_block;
  struct qnh_ring *rx = (struct qnh_ring *)(uintptr_t)rx_block;
  struct qnh_mem *tmem = (struct qnh_mem *)(uintptr_t)tx->mem;
  struct qnh_mem *rmem = (struct qnh_mem *)(uintptr_t)rx->mem;
  if (!macs_ok(dst_mac, src_mac)) { tx->stop = QNH_STOP_MAC; return 0; }
  const uint64_t want_dst = (uint64_t)dst_mac, want_src = (uint64_t)src_mac;
  uint32_t why = QNH_STOP_MAX;
  uint32_t n = 0;
  if ((tx_hdr != 10 && tx_hdr != 12) || (rx_hdr != 10 && rx_hdr != 12)) { tx->stop = QNH_STOP_TX_OTHER; return 0; }
  for (; n < max; n++) {
    int32_t th;
    uint32_t flen;
    const uint8_t *frame = next_plain_tx(tx, tmem, tx_hdr, MAX_FRAME, &th, &flen, &why);
    if (frame == NULL) break;

    int32_t rh;
    uint8_t *dstp = next_rx_buffer(rx, rmem, rx_hdr, flen, &rh, &why);
    if (dstp == NULL) break;
    // memmove: a front-end may map one memory into two ports and make buffers overlap.
    memmove(dstp + rx_hdr, frame, flen);
    // The MACs are checked on our copy, not on the guest's buffer, which the
    // guest may rewrite at any time: what is delivered is what was checked.
    // On a mismatch the receiver's buffer was written but not used (it is
    // still the device's) and the frame is left for the general path.
    if (mac_at(dstp + rx_hdr) != want_dst || mac_at(dstp + rx_hdr + 6) != want_src) { why = QNH_STOP_MAC; break; }

    rx->last_avail = (rx->last_avail + 1) & 0xffff;
    push_used(rx, (uint32_t)rh, rx_hdr + flen);
    consume_tx(tx, th);
  }
  // The caller's release store of used.idx follows; keep our entries before it.
  __atomic_thread_fence(__ATOMIC_RELEASE);
  tx->stop = why;
  return (int)n;
}
