// Public surface of the virtqueue layer (mock-driver.ts is test support and
// deliberately not re-exported).
export * from './memory.js';
export * from './chain.js';
export * from './split.js';
export * from './net.js';
export * from './forward.js';
export { copyBytes, SMALL_COPY_MAX } from './copy.js';
export * from './walk.js';
