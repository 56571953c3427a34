// One side of a native fast-path unit test: a mock guest (rings at gpa 0,
// buffers at SIDE_BUF), a driver on its rings and our SplitQueue over them;
// frames with given MACs posted one readable descriptor each.
import assert from 'node:assert/strict';
import { SplitQueue } from '../../src/vhost-user/virtq/index.js';
import { MockGuest, MockVirtq } from './mock-driver.js';

export const SIDE_QSIZE = 16;
/** The buffers region: gpa SIDE_BUF .. SIDE_BUF + 0x40000, a 0x1000-byte slot per posted frame. */
export const SIDE_BUF = 0x100000;
export const SIDE_DST = 0x52540000000b;
export const SIDE_SRC = 0x52540000000a;

export interface Side { g: MockGuest; drv: MockVirtq; q: SplitQueue }

export function side(): Side {
  const g = new MockGuest([{ gpa: 0, size: 0x10000, ua: 0x7f0000000000 }, { gpa: SIDE_BUF, size: 0x40000, ua: 0x7f1000000000 }], { guard: 64 });
  const drv = MockVirtq.at(g, SIDE_QSIZE, 0x1000);
  const q = new SplitQueue(SIDE_QSIZE, { eventIdx: true, indirectDesc: true });
  assert.equal(q.setRings(g.mem, drv.descUA, drv.availUA, drv.usedUA), null);
  q.setBase(0);
  return { g, drv, q };
}

/** A frame of `len` bytes from `src` to `dst` (48-bit MACs as numbers), the rest a pattern moved by `seed`. */
export function frame(len: number, dst = SIDE_DST, src = SIDE_SRC, seed = 0): Uint8Array {
  const f = new Uint8Array(len);
  for (let i = 0; i < 6; i++) {
    f[i] = Math.floor(dst / 2 ** (8 * (5 - i))) & 0xff;
    f[6 + i] = Math.floor(src / 2 ** (8 * (5 - i))) & 0xff;
  }
  for (let i = 12; i < len; i++) f[i] = (i * 7 + seed) & 0xff;
  return f;
}

/** Posts `f` behind a zeroed header of `hdr` bytes as one readable descriptor at buffer slot `slot`. */
export function send(a: Side, slot: number, f: Uint8Array, hdr = 12): number {
  const gpa = SIDE_BUF + 0x1000 * slot;
  a.g.write(gpa, new Uint8Array(hdr));
  a.g.write(gpa + hdr, f);
  return a.drv.addChain([{ addr: gpa, len: hdr + f.length }]);
}
