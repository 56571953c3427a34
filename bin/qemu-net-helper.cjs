#!/usr/bin/env node
'use strict';
// QEMU execs this with `--use-vnet --fd=N --br=BR` and no subcommand, and
// waits for it once per NIC: that form (and `helper ...`) loads one bundled
// CommonJS file and never oclif; CommonJS and a single file halve the
// module-loading time measured for the unbundled ES modules. Without
// CAP_NET_ADMIN (an unprivileged QEMU or libvirt) the helper is the broker's
// client: dist/broker-client.cjs, which loads no native code at all.
// Everything else is the oclif CLI.
// A container runtime runs us as a CNI plugin (type "qemu-net-helper" in
// CNI_PATH): the environment says so. One env lookup, nothing loaded, for
// QEMU's path.
if (process.env.CNI_COMMAND !== undefined) {
  require('../dist/cni.cjs').cniMain();
  return;
}
const argv = process.argv.slice(2);
const first = argv[0];
// QEMU's form starts with a helper flag; --help, --version and --json (a
// global flag before the command word: `--json list`) are the CLI's.
const helperForm =
  first === 'helper' ||
  (first !== undefined && first.startsWith('--') && first !== '--help' && first !== '--version' && first !== '--json');

// Root, or CAP_NET_ADMIN (bit 12 of CapEff): host/context.ts hasNetAdmin(),
// repeated here so that the privileged path does not load the client bundle
// (node:net alone costs ~5-9 ms of QEMU's start-up).
function netAdmin() {
  if (process.geteuid() === 0) return true;
  try {
    const m = /^CapEff:\s*([0-9a-f]+)$/m.exec(require('fs').readFileSync('/proc/self/status', 'latin1'));
    return m !== null && ((BigInt('0x' + m[1]) >> 12n) & 1n) === 1n;
  } catch {
    return false;
  }
}

if (helperForm) {
  const args = first === 'helper' ? argv.slice(1) : argv;
  if (!netAdmin()) {
    require('../dist/broker-client.cjs').helperClientMain(args).then((code) => process.exit(code));
  } else {
    const { helperMain } = require('../dist/helper.cjs');
    const loadFull = () => require('../dist/helper-full.cjs');
    process.exit(helperMain(args, loadFull));
  }
} else {
  import('../dist/src/cli/main.js').then(({ main }) => main(argv, __filename));
}
