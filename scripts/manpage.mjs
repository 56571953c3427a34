// qemu-net-helper(8) from the program's own --help texts (oclif's and the
// helper's), so the manual page cannot drift from what the program says.
// Used by scripts/package.mjs; `node scripts/manpage.mjs` prints the page.
import { spawnSync } from 'node:child_process';
import { readFileSync } from 'node:fs';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';

// Narrower than a terminal: man indents the verbatim blocks by 7 columns.
const COLUMNS = '72';

// The helper form has its own usage (QEMU's path never loads oclif), printed
// on stderr (stdout may be QEMU's monitor): from the program itself.
function helpText(root, args) {
  const r = spawnSync(process.execPath, [join(root, 'bin/qemu-net-helper.cjs'), ...args, '--help'], {
    encoding: 'utf8',
    env: { PATH: process.env.PATH ?? '/usr/bin:/bin', OCLIF_COLUMNS: COLUMNS, NO_COLOR: '1', LC_ALL: 'C' },
  });
  const text = (r.stdout + r.stderr).replace(/\s+$/, '');
  if (r.error || !text) throw new Error(`manpage: '${args.join(' ')} --help' printed nothing (${r.error?.message ?? `exit ${r.status}`})`);
  return text;
}

/** Roff-escapes text for a no-fill (verbatim) block. */
function verbatim(text) {
  const lines = text.split('\n').map((l) => {
    const e = l.replace(/\\/g, '\\e').replace(/-/g, '\\-');
    return /^[.']/.test(e) ? `\\&${e}` : e;
  });
  return ['.nf', ...lines, '.fi'].join('\n');
}

/**
 * oclif's own --help, rendered in this process (one Node start for all the
 * commands instead of one each): showHelp() with its output captured.
 */
async function oclifHelp(root) {
  const { Config, Help } = await import(join(root, 'node_modules/@oclif/core/lib/index.js'));
  const config = await Config.load({ root });
  class Capture extends Help {
    text = [];
    log(...args) { this.text.push(args.join(' ')); }
  }
  const render = async (argv) => {
    const h = new Capture(config, { maxWidth: Number(COLUMNS), stripAnsi: true });
    await h.showHelp(argv);
    return h.text.join('\n').replace(/\s+$/, '');
  };
  const ids = config.commands.filter((c) => !c.hidden).map((c) => c.id).sort();
  const commands = [];
  for (const id of ids) commands.push({ id: id.replace(/:/g, ' '), text: id === 'helper' ? helpText(root, ['helper']) : await render([id]) });
  return { root: await render([]), commands };
}

export async function manPage(root, { version, date }) {
  const help = await oclifHelp(root);
  const out = [
    `.TH QEMU\\-NET\\-HELPER 8 "${date}" "qemu\\-net\\-helper ${version}" "System Administration"`,
    '.SH NAME',
    'qemu\\-net\\-helper \\- network helper and broker for QEMU and libvirt',
    '.SH SYNOPSIS',
    '.B qemu\\-net\\-helper',
    '.RB [ helper ]',
    '.RB [ \\-\\-use\\-vnet ]',
    '.BI \\-\\-br= bridge',
    '.BI \\-\\-fd= fd',
    '.br',
    '.B qemu\\-net\\-helper',
    '.I command',
    '.RI [ flags ]',
    '.SH DESCRIPTION',
    'Run by QEMU (\\fB\\-netdev tap,helper=/usr/bin/qemu\\-net\\-helper\\fR) or by libvirt',
    '(\\fBbridge_helper\\fR) without a command, it hands QEMU a tap on the bridge the ACL allows;',
    'without \\fBCAP_NET_ADMIN\\fR it asks the broker (\\fBqemu\\-net\\-helper daemon\\fR),',
    'which systemd starts on the first connection to its socket.',
    '.PP',
    verbatim(help.root),
    '.SH COMMANDS',
  ];
  for (const c of help.commands) out.push(`.SS "${c.id.replace(/-/g, '\\-')}"`, verbatim(c.text));
  out.push(
    '.SH FILES',
    '.TP', '.I /etc/qemu\\-net\\-helper/bridge.conf', 'Access control list: who may use which bridge, device, mode or profile (default: deny all).',
    '.TP', '.I /etc/qemu\\-net\\-helper/policies/', 'Network policies: how each mode is made (default.json is the built\\-in one).',
    '.TP', '.I /etc/qemu\\-net\\-helper/profiles/', 'Named profiles (mode, device, MAC) that a bridge name may select.',
    '.TP', '.I /run/qemu\\-net\\-helper/', 'State: endpoint records and the broker socket \\fIbroker.sock\\fR.',
    '.SH SEE ALSO',
    '.BR qemu\\-system\\-x86_64 (1),',
    '.BR systemd.socket (5),',
    '.BR ip (8)',
    '',
  );
  return out.join('\n');
}

if (process.argv[1] && fileURLToPath(import.meta.url) === process.argv[1]) {
  const root = fileURLToPath(new URL('..', import.meta.url));
  const pkg = JSON.parse(readFileSync(join(root, 'package.json'), 'utf8'));
  process.stdout.write(await manPage(root, { version: pkg.version, date: new Date().toISOString().slice(0, 10) }));
}
