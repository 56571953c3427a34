// The shared part of the native fast path (forward.c, uplink.c): the ring and
// memory-table blocks TypeScript fills in (virtq/native.ts mirrors their
// layout; the asserts below and there keep both sides equal), and the
// bounds-checked accessors every loop reads guest rings through.
#ifndef QNH_RING_H
#define QNH_RING_H
#include <stddef.h>
#include <stdint.h>
#include <string.h>

#define QNH_ABI 4

struct qnh_region {
  uint64_t gpa;   // guest-physical start
  uint64_t size;  // bytes
  uint64_t host;  // address of the mapping in this process
};

struct qnh_mem {
  uint32_t count;  // regions (1..64), fixed at creation
  uint32_t hint;   // last region that matched (written here only)
  uint64_t reserved;
  struct qnh_region r[];
};

// One split virtqueue. Written by SplitQueue's native block (virtq/native.ts):
// addresses once, the three positions before every call, read back after.
struct qnh_ring {
  uint64_t desc;   // host address of the descriptor table (16 * size bytes)
  uint64_t avail;  // host address of the avail ring (6 + 2 * size)
  uint64_t used;   // host address of the used ring (6 + 8 * size)
  uint64_t mem;    // struct qnh_mem of the ring's guest
  uint32_t size;   // power of two, <= 32768
  uint32_t last_avail;   // u16 positions, free-running
  uint32_t last_used;
  uint32_t avail_cache;  // avail.idx as last read
  uint32_t stop;         // why the last call stopped (QNH_STOP_*)
  uint32_t reserved;
};

_Static_assert(sizeof(void *) == 8, "64-bit hosts only: addresses cross koffi as uint64_t");
_Static_assert(sizeof(struct qnh_ring) == 56, "ring block layout is shared with virtq/native.ts");
_Static_assert(sizeof(struct qnh_region) == 24, "region layout is shared with virtq/native.ts");
_Static_assert(offsetof(struct qnh_mem, r) == 16, "region table layout is shared with virtq/native.ts");

enum {
  QNH_STOP_MAX = 0,       // forwarded `max` frames
  QNH_STOP_TX_EMPTY = 1,  // nothing more on the TX ring
  QNH_STOP_TX_OTHER = 2,  // next TX chain or frame needs the general path
  QNH_STOP_MAC = 3,       // next frame is not for the cached decision
  QNH_STOP_RX_EMPTY = 4,  // receiver has no buffer posted
  QNH_STOP_RX_OTHER = 5,  // receiver's next buffer needs the general path
};

#define F_WRITE 2
#define ETH_MIN 14
#define MAX_FRAME 65535

static inline uint16_t load16(const void *p) { return __atomic_load_n((const uint16_t *)p, __ATOMIC_RELAXED); }
static inline uint32_t load32(const void *p) { return __atomic_load_n((const uint32_t *)p, __ATOMIC_RELAXED); }
// Descriptor tables are only 4-byte aligned in host memory (region views are
// 8-aligned, rings 16-aligned in guest-physical space): two 32-bit reads.
static inline uint64_t load_addr(const void *p) {
  return (uint64_t)load32(p) | ((uint64_t)load32((const uint8_t *)p + 4) << 32);
}

// Host address of [gpa, gpa + len) if it lies inside one region, else NULL.
static inline uint8_t *translate(struct qnh_mem *m, uint64_t gpa, uint32_t len) {
  uint32_t h = m->hint;
  const struct qnh_region *r = &m->r[h < m->count ? h : 0];
  if (gpa >= r->gpa && gpa - r->gpa <= r->size && len <= r->size - (gpa - r->gpa))
    return (uint8_t *)(uintptr_t)(r->host + (gpa - r->gpa));
  for (uint32_t i = 0; i < m->count; i++) {
    r = &m->r[i];
    if (gpa >= r->gpa && gpa - r->gpa <= r->size && len <= r->size - (gpa - r->gpa)) {
      m->hint = i;
      return (uint8_t *)(uintptr_t)(r->host + (gpa - r->gpa));
    }
  }
  return NULL;
}

// Next available head of `q` (not consumed), or -1 with *why set.
static inline int32_t peek_head(struct qnh_ring *q, uint32_t empty, uint32_t other, uint32_t *why) {
  const uint8_t *avail = (const uint8_t *)(uintptr_t)q->avail;
  if (q->last_avail == q->avail_cache) {
    // Acquire: ring entries and descriptors are read only after this load.
    uint16_t idx = __atomic_load_n((const uint16_t *)(avail + 2), __ATOMIC_ACQUIRE);
    uint16_t n = (uint16_t)(idx - q->last_avail);
    if (n == 0) { *why = empty; return -1; }
    // A jump beyond the ring size is corruption: the general path marks the ring broken.
    if (n > q->size) { *why = other; return -1; }
    q->avail_cache = idx;
  }
  uint16_t head = load16(avail + 4 + 2 * (q->last_avail & (q->size - 1)));
  if (head >= q->size) { *why = other; return -1; }
  return head;
}

// The buffer of descriptor `head` if it is a single descriptor with exactly
// `flags` (so no NEXT, no INDIRECT) lying entirely inside one region; its
// length in *len. The descriptor is read once.
static inline uint8_t *single_buffer(const struct qnh_ring *q, struct qnh_mem *m, uint32_t head, uint16_t flags, uint32_t *len) {
  const uint8_t *d = (const uint8_t *)(uintptr_t)q->desc + 16 * head;
  uint64_t addr = load_addr(d);
  *len = load32(d + 8);
  if (load16(d + 12) != flags) return NULL;
  return translate(m, addr, *len);
}

static inline void push_used(struct qnh_ring *q, uint32_t head, uint32_t len) {
  uint8_t *e = (uint8_t *)(uintptr_t)q->used + 4 + 8 * (q->last_used & (q->size - 1));
  __atomic_store_n((uint32_t *)e, head, __ATOMIC_RELAXED);
  __atomic_store_n((uint32_t *)(e + 4), len, __ATOMIC_RELAXED);
  q->last_used = (q->last_used + 1) & 0xffff;
}

static inline uint64_t mac_at(const uint8_t *p) {
  return ((uint64_t)p[0] << 40) | ((uint64_t)p[1] << 32) | ((uint64_t)p[2] << 24) |
         ((uint64_t)p[3] << 16) | ((uint64_t)p[4] << 8) | (uint64_t)p[5];
}

// The caller passes 48-bit MACs; anything else is its bug, refused (a
// negative or NaN double has no defined conversion to an integer).
static inline int macs_ok(double dst_mac, double src_mac) {
  return dst_mac >= 0 && dst_mac < 281474976710656.0 && src_mac >= 0 && src_mac < 281474976710656.0;
}

// The next guest TX frame if it is one device-readable buffer holding a plain
// virtio-net header of tx_hdr bytes and an Ethernet frame of ETH_MIN..max_len
// bytes: the frame's start, with *head and *flen; else NULL with *why set
// (QNH_STOP_TX_EMPTY, QNH_STOP_TX_OTHER). Nothing is consumed. An offload
// header (flags or gso_type set: a partial checksum or a GSO frame) needs the
// switch's checks and per-receiver decision, in TypeScript. A guest rewriting
// these bytes after this read only gets a plain header delivered, which it
// could have sent anyway.
static inline const uint8_t *next_plain_tx(struct qnh_ring *tx, struct qnh_mem *m, uint32_t tx_hdr, uint32_t max_len,
                                           int32_t *head, uint32_t *flen, uint32_t *why) {
  int32_t th = peek_head(tx, QNH_STOP_TX_EMPTY, QNH_STOP_TX_OTHER, why);
  if (th < 0) return NULL;
  uint32_t len;
  const uint8_t *src = single_buffer(tx, m, (uint32_t)th, 0, &len);
  if (src == NULL || len < tx_hdr + ETH_MIN || len - tx_hdr > max_len || (src[0] | src[1]) != 0) {
    *why = QNH_STOP_TX_OTHER;
    return NULL;
  }
  *head = th;
  *flen = len - tx_hdr;
  return src + tx_hdr;
}

// The next guest RX buffer if it is one device-writable buffer, all of it
// inside memory (as the TypeScript walk checks it: one whose tail lies outside
// is a bad chain there, not one to deliver into), that holds an rx_hdr-byte
// header and `flen` bytes: its start, the plain virtio_net_hdr already written
// (no offloads, GSO_NONE, num_buffers 1 in the 12-byte form), with *head;
// else NULL with *why set (QNH_STOP_RX_EMPTY, QNH_STOP_RX_OTHER). Nothing is
// consumed: a buffer written but not used is still the device's.
static inline uint8_t *next_rx_buffer(struct qnh_ring *rx, struct qnh_mem *m, uint32_t rx_hdr, uint32_t flen, int32_t *head, uint32_t *why) {
  int32_t rh = peek_head(rx, QNH_STOP_RX_EMPTY, QNH_STOP_RX_OTHER, why);
  if (rh < 0) return NULL;
  uint32_t rlen;
  uint8_t *dst = single_buffer(rx, m, (uint32_t)rh, F_WRITE, &rlen);
  if (dst == NULL || rlen < rx_hdr + flen) { *why = QNH_STOP_RX_OTHER; return NULL; }
  memset(dst, 0, rx_hdr);
  if (rx_hdr == 12) dst[10] = 1;
  *head = rh;
  return dst;
}

// Consumes TX chain `head` (used with length 0: the device wrote nothing).
static inline void consume_tx(struct qnh_ring *tx, int32_t head) {
  tx->last_avail = (tx->last_avail + 1) & 0xffff;
  push_used(tx, (uint32_t)head, 0);
}

#endif
