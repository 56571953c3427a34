// Mapping fds the vhost-user front-end sends (memfd, hugetlbfs, shm) so the
// guest's memory becomes an ArrayBuffer. koffi's external buffers have no
// finalizer: every mapping must be unmapped explicitly, and no view may be
// touched after munmap (that would be a SIGSEGV, not an exception), so owners
// drop their views before calling unmap.
import { fstatSync } from 'node:fs';
import { check, koffi } from './libc.js';

const lib = koffi.load('libc.so.6');
const mmapRaw = lib.func('void *mmap(void *addr, size_t len, int prot, int flags, int fd, int64_t off)');
const munmapRaw = lib.func('int munmap(void *addr, size_t len)');
const PROT_READ = 1;
const PROT_WRITE = 2;
const MAP_SHARED = 1;
const MAP_FAILED = 0xffffffffffffffffn;

export interface Mapping {
  ptr: unknown;
  length: number;
  buffer: ArrayBuffer;
}

export function fileSize(fd: number): number {
  return fstatSync(fd).size;
}

/** Maps `length` bytes of fd from `offset` (page-aligned), shared, read/write. */
export function mapShared(fd: number, length: number, offset = 0): Mapping {
  const ptr = mmapRaw(null, length, PROT_READ | PROT_WRITE, MAP_SHARED, fd, offset);
  if (ptr === null || koffi.address(ptr) === MAP_FAILED) {
    check(-1, 'mmap', `${length} bytes`);
  }
  const buffer = koffi.view(ptr, length);
  return { ptr, length, buffer };
}

export function unmap(m: Mapping): void {
  munmapRaw(m.ptr, m.length);
}
