// Builds the native fast path (native/*.c) into dist/native/. Without a
// C compiler the build goes on and the switch runs its TypeScript path alone
// (a unit test says so loudly unless QNH_NATIVE=0); scripts/setup.sh installs gcc.
import { execFileSync } from 'node:child_process';
import { mkdirSync } from 'node:fs';

const out = 'dist/native/libqnh-fastpath.so';
/** The fast path's C files (native/ring.h is included by both). */
export const NATIVE_SOURCES = ['native/forward.c', 'native/uplink.c'];
mkdirSync('dist/native', { recursive: true });
const cc = process.env.CC || 'cc';
try {
  execFileSync(cc, ['-O2', '-std=c11', '-Wall', '-Wextra', '-Werror', '-fPIC', '-shared', '-o', out, ...NATIVE_SOURCES], { stdio: 'inherit' });
} catch (e) {
  console.warn(`build-native: ${cc} failed (${e.message.split('\n')[0]}); the switch will run without its native fast path`);
}
