#!/usr/bin/env node
// QEMU execs this with `--use-vnet --fd=N --br=BR` and no subcommand, and
// waits for it once per NIC: that form (and `helper ...`) goes straight to the
// helper module without loading oclif. Everything else is the oclif CLI.
const argv = process.argv.slice(2);
const first = argv[0];
const helperForm =
  first === 'helper' ||
  (first !== undefined && first.startsWith('--') && first !== '--help' && first !== '--version');

if (helperForm) {
  const { helperMain } = await import('../dist/src/helper/main.js');
  process.exit(helperMain(first === 'helper' ? argv.slice(1) : argv));
} else {
  const { execute } = await import('@oclif/core');
  await execute({ dir: import.meta.url });
}
