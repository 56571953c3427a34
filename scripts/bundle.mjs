// The start-up paths QEMU waits for are single CommonJS bundles (one file
// loads far faster than a tree of ES modules): the helper fast path, its
// policy path, and the unprivileged broker client.
import { build } from 'esbuild';

const common = {
  bundle: true, platform: 'node', format: 'cjs', target: 'node20', external: ['koffi'], logLevel: 'warning',
  define: { 'import.meta.url': '__qnhImportMetaUrl' },
  banner: { js: "const __qnhImportMetaUrl = require('url').pathToFileURL(__filename).href;" },
};
await Promise.all([
  build({ ...common, entryPoints: ['src/helper/main.ts'], outfile: 'dist/helper.cjs' }),
  build({ ...common, entryPoints: ['src/helper/full.ts'], outfile: 'dist/helper-full.cjs' }),
  build({ ...common, entryPoints: ['src/broker/client.ts'], outfile: 'dist/broker-client.cjs' }),
]);
