// The start-up paths QEMU waits for are single CommonJS bundles (one file
// loads far faster than a tree of ES modules): the helper fast path, its
// policy path, the unprivileged broker client, and the CNI plugin.
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
  // The CNI plugin (bin dispatches on CNI_COMMAND): one file, like the helper.
  build({ ...common, entryPoints: ['src/cni/main.ts'], outfile: 'dist/cni.cjs' }),
]);
