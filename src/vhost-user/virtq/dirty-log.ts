// The live-migration dirty log (vhost-user LOG_SHMFD): one bit per 4 KiB page
// of guest-physical memory, in memory shared with the front-end, which reads
// and clears it while copying the guest. Every byte the device writes into
// guest memory (RX buffers, used ring entries and index, avail_event, used
// flags) is marked after it is written, so a page copied before our write is
// copied again. Bits are set with an atomic OR: QEMU clears words
// concurrently with an atomic exchange.

const LOG_PAGE = 4096;

export class DirtyLog {
  constructor(readonly bits: Uint8Array) {}

  /** Marks the pages of [gpa, gpa + len). Pages beyond the log are ignored (a short log is the front-end's problem, never ours). */
  mark(gpa: number, len: number): void {
    if (!(len > 0) || !(gpa >= 0)) return;
    const last = Math.floor((gpa + len - 1) / LOG_PAGE);
    const bits = this.bits;
    for (let p = Math.floor(gpa / LOG_PAGE); p <= last; p++) {
      const i = Math.floor(p / 8);
      if (i >= bits.length) return;
      Atomics.or(bits, i, 1 << (p % 8));
    }
  }
}
