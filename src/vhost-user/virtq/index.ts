// Public surface of the virtqueue layer (its test driver lives in test/lib/mock-driver.ts,
// outside src).
export * from './memory.js';
export * from './chain.js';
export * from './split.js';
export * from './net.js';
export * from './forward.js';
export * from './walk.js';
export * from './dirty-log.js';
