// `npm run package`: the Debian package (amd64) of the built tree, made with
// dpkg-deb from a staging directory; prints the .deb's path as its last line.
// --build first runs `npm ci` (when node_modules is missing) and the build, so
// a clean checkout works. QNH_PACKAGE_VERSION overrides package.json's version
// (tests build an upgrade with it); QNH_PACKAGE_OUT is the output directory
// (default: the checkout's root).
import { execFileSync } from 'node:child_process';
import {
  chmodSync, copyFileSync, cpSync, existsSync, lstatSync, mkdirSync, mkdtempSync, readdirSync,
  readFileSync, rmSync, statSync, symlinkSync, writeFileSync,
} from 'node:fs';
import { createHash } from 'node:crypto';
import { tmpdir } from 'node:os';
import { basename, dirname, join, relative, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';
import { gzipSync } from 'node:zlib';
import { manPage } from './manpage.mjs';

const ROOT = resolve(dirname(fileURLToPath(import.meta.url)), '..');
const NAME = 'qemu-net-helper';
const LIB = `usr/lib/${NAME}`;
const DEB = join(ROOT, 'contrib/debian');

const run = (cmd, args, opts = {}) => execFileSync(cmd, args, { cwd: ROOT, stdio: ['ignore', 'inherit', 'inherit'], ...opts });
const out = (cmd, args) => execFileSync(cmd, args, { cwd: ROOT, encoding: 'utf8', stdio: ['ignore', 'pipe', 'inherit'] }).trim();

if (process.argv.includes('--build')) {
  // Progress goes to stderr: stdout's last line is the package's path.
  if (!existsSync(join(ROOT, 'node_modules/.package-lock.json'))) run('npm', ['ci', '--no-audit', '--no-fund'], { stdio: ['ignore', 2, 2] });
  run('npm', ['run', '-s', 'build'], { stdio: ['ignore', 2, 2] });
}
for (const f of ['dist/helper.cjs', 'dist/src/commands/daemon.js']) {
  if (!existsSync(join(ROOT, f))) throw new Error(`package: ${f} is missing: run 'npm run package' (it builds) or 'npm run build' first`);
}

const pkg = JSON.parse(readFileSync(join(ROOT, 'package.json'), 'utf8'));
const version = process.env.QNH_PACKAGE_VERSION || pkg.version;
if (!/^[0-9][A-Za-z0-9.+~]*$/.test(version)) throw new Error(`package: '${version}' is not a Debian native version`);
// Reproducible: the date of the last commit (or SOURCE_DATE_EPOCH), not now.
const epoch = Number(process.env.SOURCE_DATE_EPOCH || tryOut('git', ['log', '-1', '--format=%ct']) || Math.floor(Date.now() / 1000));
const date = new Date(epoch * 1000);
const outDir = resolve(process.env.QNH_PACKAGE_OUT || ROOT);
const debFile = join(outDir, `${NAME}_${version}_amd64.deb`);

function tryOut(cmd, args) {
  try { return out(cmd, args); } catch { return ''; }
}

const stage = mkdtempSync(join(tmpdir(), 'qnh-deb-'));
try {
  const at = (p) => join(stage, p);
  const put = (p, data, mode = 0o644) => {
    mkdirSync(dirname(at(p)), { recursive: true });
    writeFileSync(at(p), data);
    chmodSync(at(p), mode);
  };

  // The program: the launcher, the bundles, the compiled CLI (oclif loads
  // dist/src/commands), a package.json stripped to what Node and oclif read.
  put(`${LIB}/bin/${NAME}.cjs`, readFileSync(join(ROOT, 'bin', `${NAME}.cjs`)), 0o755);
  for (const f of readdirSync(join(ROOT, 'dist')).filter((n) => n.endsWith('.cjs'))) put(`${LIB}/dist/${f}`, readFileSync(join(ROOT, 'dist', f)));
  // Only output whose source still exists: tsc never deletes, so a tree built
  // before a file moved (say, to test/lib) still holds the old .js.
  const fromSource = (s) => {
    const src = join(ROOT, relative(join(ROOT, 'dist'), s));
    return statSync(s).isDirectory() ? existsSync(src) : s.endsWith('.js') && existsSync(src.replace(/\.js$/, '.ts'));
  };
  cpSync(join(ROOT, 'dist/src'), at(`${LIB}/dist/src`), { recursive: true, filter: fromSource });
  const { name, description, license, type, bin, engines, oclif, dependencies } = pkg;
  put(`${LIB}/package.json`, JSON.stringify({ name, version: pkg.version, description, license, type, bin, engines, oclif, dependencies }, null, 2) + '\n');

  // The C fast path, built here with Debian's hardening flags and stripped.
  const flags = (v) => out('dpkg-buildflags', ['--get', v]).split(/\s+/).filter(Boolean).filter((f) => !f.startsWith('-ffile-prefix-map'));
  mkdirSync(at(`${LIB}/dist/native`), { recursive: true });
  const so = at(`${LIB}/dist/native/libqnh-fastpath.so`);
  run(process.env.CC || 'cc', [...flags('CPPFLAGS'), ...flags('CFLAGS'), '-std=c11', '-Wall', '-Wextra', '-Werror', '-fPIC', '-shared', ...flags('LDFLAGS'), '-o', so, 'native/forward.c', 'native/uplink.c']);
  run('strip', ['--strip-unneeded', '--remove-section=.comment', '--remove-section=.note', so]);
  chmodSync(so, 0o644);

  // Production dependencies as npm resolved them (nested copies included);
  // koffi's native part for glibc x86-64 only.
  const licenses = [];
  const prod = out('npm', ['ls', '--omit=dev', '--all', '--parseable']).split('\n').map((p) => relative(ROOT, p)).filter((p) => p.startsWith('node_modules/'));
  const skip = /(^|\/)(README|CHANGELOG|HISTORY)[^/]*$|\.d\.[cm]?ts$|\.map$|\/musl_x64$/i;
  for (const dir of prod) {
    const src = join(ROOT, dir);
    cpSync(src, at(`${LIB}/${dir}`), {
      recursive: true,
      filter: (s) => !(s !== src && basename(s) === 'node_modules') && !skip.test(s),
    });
    const m = JSON.parse(readFileSync(join(src, 'package.json'), 'utf8'));
    licenses.push(` ${m.name} ${m.version}: ${m.license ?? 'see its LICENSE file'}`);
  }
  for (const f of walk(at(`${LIB}/node_modules`))) if (f.endsWith('.node')) run('strip', ['--strip-unneeded', '--remove-section=.comment', '--remove-section=.note', f]);

  // The built-in policies are the conffile in /etc (an administrator edits
  // them there and dpkg keeps the edit across upgrades); the program finds
  // its built-ins at <root>/policies.
  put(`etc/${NAME}/policies/default.json`, readFileSync(join(ROOT, 'policies/default.json')));
  symlinkSync(`/etc/${NAME}/policies`, at(`${LIB}/policies`));
  put(`etc/${NAME}/bridge.conf`, readFileSync(join(DEB, 'bridge.conf')));

  mkdirSync(at('usr/bin'), { recursive: true });
  symlinkSync(`../lib/${NAME}/bin/${NAME}.cjs`, at(`usr/bin/${NAME}`));
  for (const u of ['socket', 'service']) put(`lib/systemd/system/${NAME}.${u}`, readFileSync(join(ROOT, `contrib/systemd/${NAME}.${u}`)));
  // The switch's unit is installed, not enabled: it runs once /etc/qemu-net-helper/switch.json exists and the admin enables it.
  put(`lib/systemd/system/${NAME}-switch.service`, readFileSync(join(ROOT, `contrib/systemd/${NAME}-switch.service`)));

  put(`usr/share/man/man8/${NAME}.8.gz`, gzipSync(await manPage(ROOT, { version, date: date.toISOString().slice(0, 10) }), { level: 9 }));
  const doc = `usr/share/doc/${NAME}`;
  put(`${doc}/copyright`, readFileSync(join(DEB, 'copyright'), 'utf8').replace('@MODULES@', licenses.sort().join('\n')));
  const commit = tryOut('git', ['rev-parse', '--short=12', 'HEAD']);
  const changelog = `${NAME} (${version}) unstable; urgency=medium\n\n  * Built from ${commit ? `commit ${commit}` : 'a source tree without git'}; see the project's git log.\n\n -- ${/Maintainer: (.*)/.exec(readFileSync(join(DEB, 'control'), 'utf8'))[1]}  ${rfc2822(date)}\n`;
  put(`${doc}/changelog.gz`, gzipSync(changelog, { level: 9 }));
  put(`usr/share/lintian/overrides/${NAME}`, readFileSync(join(DEB, 'lintian-overrides')));

  // Control area.
  const files = walk(stage).filter((f) => !lstatSync(f).isSymbolicLink());
  // npm leaves modes as each tarball had them: only the launcher executes.
  for (const f of files) chmodSync(f, f.endsWith(`/bin/${NAME}.cjs`) ? 0o755 : 0o644);
  for (const d of walkDirs(stage)) chmodSync(d, 0o755);
  const kib = files.reduce((n, f) => n + Math.ceil(statSync(f).size / 1024), 0) + walkDirs(stage).length;
  put('DEBIAN/control', readFileSync(join(DEB, 'control'), 'utf8').replace('@VERSION@', version).replace('@SIZE@', String(kib)));
  put('DEBIAN/conffiles', [`/etc/${NAME}/bridge.conf`, `/etc/${NAME}/policies/default.json`].join('\n') + '\n');
  for (const s of ['postinst', 'prerm', 'postrm']) put(`DEBIAN/${s}`, readFileSync(join(DEB, s)), 0o755);
  put('DEBIAN/md5sums', files.filter((f) => !f.includes('/etc/')).map((f) => `${createHash('md5').update(readFileSync(f)).digest('hex')}  ${relative(stage, f)}`).sort().join('\n') + '\n');

  // The staging tree holds no path of this checkout.
  for (const f of files) if (readFileSync(f).includes(ROOT + '/')) throw new Error(`package: ${relative(stage, f)} refers to the source tree ${ROOT}`);

  mkdirSync(outDir, { recursive: true });
  run('dpkg-deb', ['--root-owner-group', '-Zxz', '--build', stage, debFile], { stdio: ['ignore', 2, 2], env: { ...process.env, SOURCE_DATE_EPOCH: String(epoch) } });
} finally {
  rmSync(stage, { recursive: true, force: true });
}
process.stdout.write(`${debFile}\n`);

function walk(dir) {
  return readdirSync(dir, { withFileTypes: true }).flatMap((e) => {
    const p = join(dir, e.name);
    return e.isDirectory() ? walk(p) : [p];
  });
}

function walkDirs(dir) {
  return readdirSync(dir, { withFileTypes: true }).filter((e) => e.isDirectory()).flatMap((e) => [join(dir, e.name), ...walkDirs(join(dir, e.name))]);
}

function rfc2822(d) {
  const days = ['Sun', 'Mon', 'Tue', 'Wed', 'Thu', 'Fri', 'Sat'];
  const months = ['Jan', 'Feb', 'Mar', 'Apr', 'May', 'Jun', 'Jul', 'Aug', 'Sep', 'Oct', 'Nov', 'Dec'];
  const p = (n) => String(n).padStart(2, '0');
  return `${days[d.getUTCDay()]}, ${p(d.getUTCDate())} ${months[d.getUTCMonth()]} ${d.getUTCFullYear()} ${p(d.getUTCHours())}:${p(d.getUTCMinutes())}:${p(d.getUTCSeconds())} +0000`;
}
