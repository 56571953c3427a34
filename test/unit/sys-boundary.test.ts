// Libc is called from src/sys/ only: no other source file loads koffi or takes
// the raw libc functions (`c`, `check`, `koffi`, `addressOf`) from
// sys/libc.ts; they get small typed functions instead. The one exception is
// vhost-user/virtq/native.ts, the binding of our own C fast path.
import { strict as assert } from 'node:assert';
import { readdirSync, readFileSync } from 'node:fs';
import { join, relative } from 'node:path';
import { describe, it } from 'node:test';
import ts from 'typescript';
import { ROOT } from '../lib/paths.js';

const SRC = join(ROOT, 'src');
const NATIVE_BINDING = 'vhost-user/virtq/native.ts';
const RAW_LIBC = new Set(['c', 'check', 'koffi', 'addressOf']);

function sourceFiles(dir: string): string[] {
  return readdirSync(dir, { withFileTypes: true }).flatMap((e) => {
    const p = join(dir, e.name);
    if (e.isDirectory()) return sourceFiles(p);
    return e.name.endsWith('.ts') ? [p] : [];
  });
}

/** What `text` takes from koffi or raw from sys/libc, as "module: names" lines. */
function rawLibcUses(fileName: string, text: string): string[] {
  const found: string[] = [];
  const sf = ts.createSourceFile(fileName, text, ts.ScriptTarget.ES2022, true, ts.ScriptKind.TS);
  const isKoffi = (m: string): boolean => m === 'koffi' || m.startsWith('koffi/');
  const isLibc = (m: string): boolean => /(^|\/)sys\/libc(\.js)?$/.test(m);
  const visit = (n: ts.Node): void => {
    if ((ts.isImportDeclaration(n) || ts.isExportDeclaration(n)) && n.moduleSpecifier && ts.isStringLiteral(n.moduleSpecifier)) {
      const m = n.moduleSpecifier.text;
      if (isKoffi(m)) found.push(`${m}`);
      else if (isLibc(m)) {
        const clause = ts.isImportDeclaration(n) ? n.importClause?.namedBindings : n.exportClause;
        if (!clause || ts.isNamespaceImport(clause) || ts.isNamespaceExport(clause)) {
          // `import * as`, `export *` or a bare import: everything, raw functions included.
          if (!ts.isImportDeclaration(n) || n.importClause) found.push(`${m}: *`);
        } else {
          const names = clause.elements.map((e) => (e.propertyName ?? e.name).text).filter((x) => RAW_LIBC.has(x));
          if (names.length) found.push(`${m}: ${names.join(', ')}`);
        }
      }
    }
    // import('koffi'), require('koffi'), and the same for sys/libc (whole module).
    if (ts.isCallExpression(n) && n.arguments.length === 1 && ts.isStringLiteral(n.arguments[0]!)
      && (n.expression.kind === ts.SyntaxKind.ImportKeyword || (ts.isIdentifier(n.expression) && n.expression.text === 'require'))) {
      const m = (n.arguments[0] as ts.StringLiteral).text;
      if (isKoffi(m)) found.push(m);
      else if (isLibc(m)) found.push(`${m}: *`);
    }
    ts.forEachChild(n, visit);
  };
  visit(sf);
  return found;
}

describe('libc calls stay in src/sys', () => {
  it('the scan sees every way of reaching koffi or the raw libc functions', () => {
    assert.deepEqual(rawLibcUses('a.ts', "import koffi from 'koffi';"), ['koffi']);
    assert.deepEqual(rawLibcUses('a.ts', "const k = await import('koffi'); const r = require('koffi');"), ['koffi', 'koffi']);
    assert.deepEqual(rawLibcUses('a.ts', "import { closeFd, c as libc, check } from '../sys/libc.js';"), ['../sys/libc.js: c, check']);
    assert.deepEqual(rawLibcUses('a.ts', "import * as l from '../../sys/libc.js';"), ['../../sys/libc.js: *']);
    assert.deepEqual(rawLibcUses('a.ts', "export { koffi } from './sys/libc.js';"), ['./sys/libc.js: koffi']);
    assert.deepEqual(rawLibcUses('a.ts', "import { closeFd, readFd, SysError } from '../sys/libc.js'; import type { X } from 'koffi-like';"), []);
  });

  it('no source file outside src/sys (but the fast path binding) takes them', () => {
    const files = sourceFiles(SRC).map((p) => relative(SRC, p));
    assert.ok(files.length > 100 && files.includes(NATIVE_BINDING), `found ${files.length} files under ${SRC}`);
    const offenders = files
      .filter((f) => !f.startsWith('sys/') && f !== NATIVE_BINDING)
      .flatMap((f) => rawLibcUses(f, readFileSync(join(SRC, f), 'utf8')).map((u) => `src/${f} imports ${u}`));
    assert.deepEqual(offenders, [], 'add a typed function to a src/sys module and call that instead');
  });
});
