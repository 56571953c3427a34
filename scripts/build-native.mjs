// Builds the native fast path (native/fastpath.c) into dist/native/. Without a
// C compiler the build goes on and the switch runs its TypeScript path alone
// (a unit test says so loudly unless QNH_NATIVE=0); scripts/setup.sh installs gcc.
import { execFileSync } from 'node:child_process';
import { mkdirSync } from 'node:fs';

const out = 'dist/native/libqnh-fastpath.so';
mkdirSync('dist/native', { recursive: true });
const cc = process.env.CC || 'cc';
try {
  execFileSync(cc, ['-O2', '-std=c11', '-Wall', '-Wextra', '-Werror', '-fPIC', '-shared', '-o', out, 'native/fastpath.c'], { stdio: 'inherit' });
} catch (e) {
  console.warn(`build-native: ${cc} failed (${e.message.split('\n')[0]}); the switch will run without its native fast path`);
}
