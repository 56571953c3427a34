// The native fast path's uplink loops (dataplane/uplink-io.ts, xsk-tx.ts):
// guest rings <-> an AF_PACKET socket's TPACKET_V2 rings, a tap, an AF_XDP
// socket's TX ring. Same discipline as forward.c: every index, descriptor and
// length from a guest ring, and every header the kernel wrote into a shared
// ring, is read once, checked, then used; anything unusual stops the loop in
// front of it for TypeScript.
#include <sys/uio.h>
#include <unistd.h>
#include "ring.h"

// ---- the uplink: guest rings <-> an AF_PACKET socket's TPACKET_V2 rings ----
//
// The same one-copy move for the switch's uplink (dataplane/uplink-io.ts):
// guest TX chain -> TX ring slot, RX ring slot -> guest RX buffer, while the
// switch's cached decision holds (the same MACs) and each guest buffer is one
// descriptor. The ring memory is shared with the kernel alone, but a slot
// header is still read once and checked against its slot like guest input.
// Anything else (a VLAN tag to put back, a bad slot, a full TX ring, a frame
// for other MACs) stops the loop in front of it for TypeScript to handle.

// One packet ring, as PacketRingIo describes it (layout shared with native.ts).
struct qnh_pring {
  uint64_t base;         // host address of slot 0
  uint32_t frame_size;   // bytes per slot, a power of two >= 256
  uint32_t frame_count;  // slots
  uint32_t next;         // the next slot we read or fill
  uint32_t stop;         // why the last call stopped (QNH_STOP_*)
};
_Static_assert(sizeof(struct qnh_pring) == 24, "packet ring block layout is shared with virtq/native.ts");

#define TP_STATUS_USER 1u
#define TP_STATUS_VLAN_VALID 0x10u
#define TP_SEND_REQUEST 1u
#define TP_BUSY 3u            // SEND_REQUEST | SENDING: the kernel's
#define TP_HDRLEN 52u         // TPACKET2_HDRLEN
#define TP_TX_DATA 32u        // TX frame data offset in a slot

static inline int pring_ok(const struct qnh_pring *p) {
  return p->base != 0 && p->frame_size >= 256 && (p->frame_size & (p->frame_size - 1)) == 0 &&
         p->frame_count != 0 && p->next < p->frame_count;
}

// Guest TX ring -> packet TX ring. Frames are marked SEND_REQUEST, not sent:
// the caller kicks the socket once. Returns frames moved; ring->stop says why
// it stopped (QNH_STOP_RX_EMPTY: the TX ring is full).
// `vnet`: bytes of virtio_net_hdr the kernel takes before each frame
// (PACKET_VNET_HDR: 10, else 0); a plain frame gets an all-zero one.
int qnh_to_packet(double tx_block, double ring_block, uint32_t max, uint32_t tx_hdr, uint32_t vnet, double dst_mac, double src_mac) {
  struct qnh_ring *tx = (struct qnh_ring *)(uintptr_t)tx_block;
  struct qnh_pring *p = (struct qnh_pring *)(uintptr_t)ring_block;
  struct qnh_mem *tmem = (struct qnh_mem *)(uintptr_t)tx->mem;
  if (!macs_ok(dst_mac, src_mac)) { p->stop = QNH_STOP_MAC; return 0; }
  if ((tx_hdr != 10 && tx_hdr != 12) || (vnet != 0 && vnet != 10) || !pring_ok(p)) { p->stop = QNH_STOP_TX_OTHER; return 0; }
  const uint64_t want_dst = (uint64_t)dst_mac, want_src = (uint64_t)src_mac;
  const uint32_t cap = p->frame_size - TP_TX_DATA - vnet;
  uint32_t why = QNH_STOP_MAX;
  uint32_t n = 0;
  for (; n < max; n++) {
    int32_t th;
    uint32_t flen;
    const uint8_t *frame = next_plain_tx(tx, tmem, tx_hdr, cap, &th, &flen, &why);
    if (frame == NULL) break;
    uint8_t *slot = (uint8_t *)(uintptr_t)(p->base + (uint64_t)p->next * p->frame_size);
    // Acquire: the kernel is done with the slot's data before we write it.
    if (__atomic_load_n((uint32_t *)slot, __ATOMIC_ACQUIRE) & TP_BUSY) { why = QNH_STOP_RX_EMPTY; break; }
    uint8_t *dst = slot + TP_TX_DATA + vnet;
    memset(slot + TP_TX_DATA, 0, vnet);
    memcpy(dst, frame, flen);
    // Checked on our copy, as qnh_forward does: the slot stays ours (not
    // marked) on a mismatch, and the frame is left for the general path.
    if (mac_at(dst) != want_dst || mac_at(dst + 6) != want_src) { why = QNH_STOP_MAC; break; }
    __atomic_store_n((uint32_t *)(slot + 4), vnet + flen, __ATOMIC_RELAXED);   // tp_len
    __atomic_store_n((uint32_t *)(slot + 8), vnet + flen, __ATOMIC_RELAXED);   // tp_snaplen
    __atomic_store_n((uint32_t *)slot, TP_SEND_REQUEST, __ATOMIC_RELEASE);
    p->next = p->next + 1 == p->frame_count ? 0 : p->next + 1;
    consume_tx(tx, th);
  }
  __atomic_thread_fence(__ATOMIC_RELEASE);
  p->stop = why;
  return (int)n;
}

// Packet RX ring -> guest RX ring, for frames from MAC `src` to MAC `dst`.
// Slots are handed back to the kernel as their frames are delivered.
// ring->stop: QNH_STOP_TX_EMPTY (no frame waiting), QNH_STOP_TX_OTHER (the
// next slot needs TypeScript: a VLAN tag, a bad header), QNH_STOP_MAC,
// QNH_STOP_RX_EMPTY / QNH_STOP_RX_OTHER (the guest's next buffer).
// `vnet`: the kernel's virtio_net_hdr (10 bytes) sits right before each
// frame; one asking for an offload stops the loop (TypeScript checks it).
int qnh_from_packet(double ring_block, double rx_block, uint32_t max, uint32_t rx_hdr, uint32_t vnet, double dst_mac, double src_mac) {
  struct qnh_pring *p = (struct qnh_pring *)(uintptr_t)ring_block;
  struct qnh_ring *rx = (struct qnh_ring *)(uintptr_t)rx_block;
  struct qnh_mem *rmem = (struct qnh_mem *)(uintptr_t)rx->mem;
  if (!macs_ok(dst_mac, src_mac)) { p->stop = QNH_STOP_MAC; return 0; }
  if ((rx_hdr != 10 && rx_hdr != 12) || (vnet != 0 && vnet != 10) || !pring_ok(p)) { p->stop = QNH_STOP_TX_OTHER; return 0; }
  const uint64_t want_dst = (uint64_t)dst_mac, want_src = (uint64_t)src_mac;
  uint32_t why = QNH_STOP_MAX;
  uint32_t n = 0;
  for (; n < max; n++) {
    uint8_t *slot = (uint8_t *)(uintptr_t)(p->base + (uint64_t)p->next * p->frame_size);
    // Acquire: the header and frame are read only after the status.
    uint32_t status = __atomic_load_n((uint32_t *)slot, __ATOMIC_ACQUIRE);
    if (!(status & TP_STATUS_USER)) { why = QNH_STOP_TX_EMPTY; break; }
    if (status & TP_STATUS_VLAN_VALID) { why = QNH_STOP_TX_OTHER; break; }
    uint32_t flen = load32(slot + 4), snap = load32(slot + 8), mac = load16(slot + 12);
    if (snap != flen || flen < ETH_MIN || mac < TP_HDRLEN + vnet || mac > p->frame_size || flen > p->frame_size - mac) { why = QNH_STOP_TX_OTHER; break; }
    // NEEDS_CSUM or a gso_type (DATA_VALID alone is a plain frame).
    if (vnet != 0 && ((slot[mac - vnet] & 1) | slot[mac - vnet + 1]) != 0) { why = QNH_STOP_TX_OTHER; break; }
    const uint8_t *frame = slot + mac;
    if (mac_at(frame) != want_dst || mac_at(frame + 6) != want_src) { why = QNH_STOP_MAC; break; }
    int32_t rh;
    uint8_t *dstp = next_rx_buffer(rx, rmem, rx_hdr, flen, &rh, &why);
    if (dstp == NULL) break;
    memcpy(dstp + rx_hdr, frame, flen);
    // Release: our reads of the slot are done before the kernel may refill it.
    __atomic_store_n((uint32_t *)slot, 0, __ATOMIC_RELEASE);
    p->next = p->next + 1 == p->frame_count ? 0 : p->next + 1;
    rx->last_avail = (rx->last_avail + 1) & 0xffff;
    push_used(rx, (uint32_t)rh, rx_hdr + flen);
  }
  __atomic_thread_fence(__ATOMIC_RELEASE);
  p->stop = why;
  return (int)n;
}

// Guest TX ring -> a tap (the `--br` uplink): one write() per frame, straight
// from the guest's buffer (the kernel's copy is the only one), all of a run in
// one call. A frame the tap does not take whole (EAGAIN: its queue is full;
// any other error) is left in the ring for TypeScript, which drops and counts
// it. The frame's MACs are checked before the write on a copy of its first
// 12 bytes; the guest may change the rest while the kernel copies it, which
// only garbles its own frame. tx->stop: as qnh_forward, QNH_STOP_RX_EMPTY when
// the tap refused.
// `vnet`: the tap's virtio_net_hdr size (IFF_VNET_HDR: 10, else 0), an
// all-zero one written before each frame in the same writev().
int qnh_to_tap(double tx_block, int fd, uint32_t max, uint32_t tx_hdr, uint32_t vnet, double dst_mac, double src_mac) {
  struct qnh_ring *tx = (struct qnh_ring *)(uintptr_t)tx_block;
  struct qnh_mem *tmem = (struct qnh_mem *)(uintptr_t)tx->mem;
  if (!macs_ok(dst_mac, src_mac)) { tx->stop = QNH_STOP_MAC; return 0; }
  if ((tx_hdr != 10 && tx_hdr != 12) || (vnet != 0 && vnet != 10) || fd < 0) { tx->stop = QNH_STOP_TX_OTHER; return 0; }
  static const uint8_t zero_hdr[10];
  const uint64_t want_dst = (uint64_t)dst_mac, want_src = (uint64_t)src_mac;
  uint32_t why = QNH_STOP_MAX;
  uint32_t n = 0;
  for (; n < max; n++) {
    int32_t th;
    uint32_t flen;
    const uint8_t *frame = next_plain_tx(tx, tmem, tx_hdr, MAX_FRAME, &th, &flen, &why);
    if (frame == NULL) break;
    uint8_t macs[12];
    memcpy(macs, frame, 12);
    if (mac_at(macs) != want_dst || mac_at(macs + 6) != want_src) { why = QNH_STOP_MAC; break; }
    struct iovec iov[2] = { { (void *)zero_hdr, vnet }, { (void *)frame, flen } };
    if (writev(fd, iov, 2) != (ssize_t)(vnet + flen)) { why = QNH_STOP_RX_EMPTY; break; }
    consume_tx(tx, th);
  }
  __atomic_thread_fence(__ATOMIC_RELEASE);
  tx->stop = why;
  return (int)n;
}

// ---- the uplink's way out through AF_XDP (dataplane/xsk-tx.ts) ----
//
// Guest TX chain -> a UMEM frame and a TX ring descriptor of an AF_XDP
// socket, as qnh_to_packet does for the packet TX ring. Entry `prod` uses
// UMEM frame `prod & (size - 1)`; a frame is free again once the kernel has
// completed that many frames (it completes in order: only the count on the
// completion ring is read, never an address). The caller kicks the socket.
// The indexes the kernel writes (its completion count) are checked before use.

struct qnh_xring {
  uint64_t tx_prod;   // host address of the TX ring's producer index (u32, ours)
  uint64_t tx_desc;   // TX ring entries: struct xdp_desc { u64 addr; u32 len; u32 options; }
  uint64_t cq_prod;   // completion ring's producer index (the kernel's)
  uint64_t cq_cons;   // completion ring's consumer index (ours)
  uint64_t umem;      // host address of UMEM frame 0
  uint32_t size;      // TX ring entries = completion ring entries = UMEM frames, a power of two
  uint32_t frame_size;
  uint32_t max_len;   // the largest frame sent from here (<= frame_size)
  uint32_t stop;      // why the last call stopped (QNH_STOP_*)
};
_Static_assert(sizeof(struct qnh_xring) == 56, "AF_XDP ring block layout is shared with virtq/native.ts");
_Static_assert(offsetof(struct qnh_xring, size) == 40 && offsetof(struct qnh_xring, stop) == 52, "AF_XDP ring block layout is shared with virtq/native.ts");

// Frames in flight after taking the kernel's completions; a completion count
// beyond what was sent is ignored.
static inline uint32_t xsk_reclaim(struct qnh_xring *x, uint32_t prod, uint32_t *done) {
  uint32_t completed = __atomic_load_n((uint32_t *)(uintptr_t)x->cq_prod, __ATOMIC_ACQUIRE);
  if ((uint32_t)(completed - *done) <= (uint32_t)(prod - *done) && completed != *done) {
    *done = completed;
    __atomic_store_n((uint32_t *)(uintptr_t)x->cq_cons, completed, __ATOMIC_RELEASE);
  }
  return prod - *done;
}

// Returns frames moved; ring->stop: as qnh_to_packet (QNH_STOP_RX_EMPTY: every
// UMEM frame is in flight).
int qnh_to_xsk(double tx_block, double ring_block, uint32_t max, uint32_t tx_hdr, double dst_mac, double src_mac) {
  struct qnh_ring *tx = (struct qnh_ring *)(uintptr_t)tx_block;
  struct qnh_xring *x = (struct qnh_xring *)(uintptr_t)ring_block;
  struct qnh_mem *tmem = (struct qnh_mem *)(uintptr_t)tx->mem;
  if (!macs_ok(dst_mac, src_mac)) { x->stop = QNH_STOP_MAC; return 0; }
  if ((tx_hdr != 10 && tx_hdr != 12) || x->size == 0 || (x->size & (x->size - 1)) != 0 || x->max_len > x->frame_size || x->max_len < ETH_MIN) {
    x->stop = QNH_STOP_TX_OTHER;
    return 0;
  }
  const uint64_t want_dst = (uint64_t)dst_mac, want_src = (uint64_t)src_mac;
  uint32_t *pprod = (uint32_t *)(uintptr_t)x->tx_prod;
  uint32_t prod = __atomic_load_n(pprod, __ATOMIC_RELAXED);
  uint32_t done = __atomic_load_n((uint32_t *)(uintptr_t)x->cq_cons, __ATOMIC_RELAXED);
  uint32_t why = QNH_STOP_MAX;
  uint32_t n = 0;
  for (; n < max; n++) {
    int32_t th;
    uint32_t flen;
    const uint8_t *frame = next_plain_tx(tx, tmem, tx_hdr, x->max_len, &th, &flen, &why);
    if (frame == NULL) break;
    if (prod - done >= x->size && xsk_reclaim(x, prod, &done) >= x->size) { why = QNH_STOP_RX_EMPTY; break; }
    const uint32_t i = prod & (x->size - 1);
    uint8_t *dst = (uint8_t *)(uintptr_t)(x->umem + (uint64_t)i * x->frame_size);
    memcpy(dst, frame, flen);
    // Checked on our copy, as qnh_forward does; the entry is not produced on a mismatch.
    if (mac_at(dst) != want_dst || mac_at(dst + 6) != want_src) { why = QNH_STOP_MAC; break; }
    uint8_t *d = (uint8_t *)(uintptr_t)x->tx_desc + 16 * (uint64_t)i;
    uint64_t addr = (uint64_t)i * x->frame_size;
    memcpy(d, &addr, 8);
    memcpy(d + 8, &flen, 4);
    memset(d + 12, 0, 4);
    prod++;
    consume_tx(tx, th);
  }
  // Release: frames and descriptors are in place before the kernel sees the entries
  // (and our used entries before the caller publishes used.idx).
  __atomic_store_n(pprod, prod, __ATOMIC_RELEASE);
  x->stop = why;
  return (int)n;
}
