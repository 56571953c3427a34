// The source tree's shape: folders import one way (value imports; `import
// type` and `export type` are erased and do not count), no file grows past
// 450 lines, and unit tests sit in folders mirroring src/. The README's
// Architecture section draws the layers this keeps.
import assert from 'node:assert/strict';
import { existsSync, readdirSync, readFileSync } from 'node:fs';
import { dirname, join, posix } from 'node:path';
import { describe, it } from 'node:test';
import { fileURLToPath } from 'node:url';
import ts from 'typescript';

const MAX_LINES = 450;

/** The checkout's root: the test runs as test/unit/*.ts and as dist/test/unit/*.js, from any directory. */
function repoRoot(): string {
  for (let d = dirname(fileURLToPath(import.meta.url)); ; d = dirname(d)) {
    if (existsSync(join(d, 'package.json')) && existsSync(join(d, 'src', 'cli'))) return d;
    if (dirname(d) === d) throw new Error(`no checkout (package.json and src/) above ${fileURLToPath(import.meta.url)}`);
  }
}

/** Every .ts file under `dir`, as posix paths relative to it. */
function tsFiles(dir: string, sub = ''): string[] {
  const out: string[] = [];
  for (const e of readdirSync(join(dir, sub), { withFileTypes: true })) {
    const rel = sub ? `${sub}/${e.name}` : e.name;
    if (e.isDirectory()) out.push(...tsFiles(dir, rel));
    else if (e.name.endsWith('.ts') && !e.name.endsWith('.d.ts')) out.push(rel);
  }
  return out.sort();
}

/** A file's folder: its top-level folder under src/, and vhost-user's subfolders each on their own ('.' for src/ itself). */
function folderOf(file: string): string {
  const parts = file.split('/');
  if (parts.length === 1) return '.';
  if (parts[0] === 'vhost-user' && parts.length > 2) return `vhost-user/${parts[1]}`;
  return parts[0]!;
}

function typeOnlyClause(clause: ts.ImportClause | undefined): boolean {
  if (!clause) return false; // `import './x.js'` runs the module
  if (clause.isTypeOnly) return true;
  if (clause.name) return false;
  const b = clause.namedBindings;
  if (!b || ts.isNamespaceImport(b)) return false;
  return b.elements.length > 0 && b.elements.every((e) => e.isTypeOnly);
}

function typeOnlyExport(d: ts.ExportDeclaration): boolean {
  if (d.isTypeOnly) return true;
  const c = d.exportClause;
  return !!c && ts.isNamedExports(c) && c.elements.length > 0 && c.elements.every((e) => e.isTypeOnly);
}

/** The relative module specifiers `text` imports as values: import/export ... from, side-effect and dynamic imports. */
function valueImports(name: string, text: string): string[] {
  const sf = ts.createSourceFile(name, text, ts.ScriptTarget.Latest, false, ts.ScriptKind.TS);
  const out: string[] = [];
  const visit = (n: ts.Node): void => {
    if (ts.isImportDeclaration(n) && ts.isStringLiteral(n.moduleSpecifier)) {
      if (!typeOnlyClause(n.importClause)) out.push(n.moduleSpecifier.text);
    } else if (ts.isExportDeclaration(n) && n.moduleSpecifier && ts.isStringLiteral(n.moduleSpecifier)) {
      if (!typeOnlyExport(n)) out.push(n.moduleSpecifier.text);
    } else if (ts.isCallExpression(n) && n.expression.kind === ts.SyntaxKind.ImportKeyword) {
      const a = n.arguments[0];
      if (a && ts.isStringLiteralLike(a)) out.push(a.text);
    }
    ts.forEachChild(n, visit);
  };
  visit(sf);
  return out.filter((s) => s.startsWith('./') || s.startsWith('../'));
}

/** Folder -> folder -> the `file -> module` imports behind that edge. */
type FolderGraph = Map<string, Map<string, string[]>>;

/** The folder graph of `files` (paths relative to src/, posix, with their text). */
function folderGraph(files: Map<string, string>): FolderGraph {
  const g: FolderGraph = new Map();
  for (const [file, text] of files) {
    const from = folderOf(file);
    if (!g.has(from)) g.set(from, new Map());
    for (const spec of valueImports(file, text)) {
      const target = posix.normalize(posix.join(posix.dirname(file), spec)).replace(/\.js$/, '.ts');
      if (target.startsWith('../')) continue; // outside src/ (package.json)
      const to = folderOf(target);
      if (to === from) continue;
      const edges = g.get(from)!;
      if (!edges.has(to)) edges.set(to, []);
      edges.get(to)!.push(`${file} -> ${target}`);
      if (!g.has(to)) g.set(to, new Map());
    }
  }
  return g;
}

/** Strongly connected components of more than one folder (Tarjan). */
function cycles(g: FolderGraph): string[][] {
  let next = 0;
  const index = new Map<string, number>();
  const low = new Map<string, number>();
  const stack: string[] = [];
  const onStack = new Set<string>();
  const out: string[][] = [];
  const connect = (v: string): void => {
    index.set(v, next); low.set(v, next); next++;
    stack.push(v); onStack.add(v);
    for (const w of g.get(v)?.keys() ?? []) {
      if (!index.has(w)) { connect(w); low.set(v, Math.min(low.get(v)!, low.get(w)!)); }
      else if (onStack.has(w)) low.set(v, Math.min(low.get(v)!, index.get(w)!));
    }
    if (low.get(v) === index.get(v)) {
      const scc: string[] = [];
      for (let w = ''; w !== v;) { w = stack.pop()!; onStack.delete(w); scc.push(w); }
      if (scc.length > 1) out.push(scc.sort());
    }
  };
  for (const v of [...g.keys()].sort()) if (!index.has(v)) connect(v);
  return out;
}

/** One shortest loop through `scc`'s first folder, as folders (first repeated at the end). */
function loopIn(g: FolderGraph, scc: string[]): string[] {
  const start = scc[0]!;
  const inScc = new Set(scc);
  const prev = new Map<string, string>();
  const queue = [start];
  while (queue.length) {
    const v = queue.shift()!;
    for (const w of [...(g.get(v)?.keys() ?? [])].sort()) {
      if (!inScc.has(w)) continue;
      if (w === start) {
        const path: string[] = [];
        for (let u = v; u !== start; u = prev.get(u)!) path.unshift(u);
        return [start, ...path, start];
      }
      if (!prev.has(w)) { prev.set(w, v); queue.push(w); }
    }
  }
  return [...scc, start];
}

/** Each cycle named with the files behind its edges; empty when the graph flows one way. */
function describeCycles(g: FolderGraph): string[] {
  return cycles(g).map((scc) => {
    const loop = loopIn(g, scc);
    const lines = [`folders import each other in a cycle: ${loop.join(' -> ')} (the component: ${scc.join(', ')})`];
    for (let i = 0; i + 1 < loop.length; i++) {
      const files = g.get(loop[i]!)!.get(loop[i + 1]!)!;
      lines.push(`  ${loop[i]} -> ${loop[i + 1]}: ${files.slice(0, 5).join('; ')}${files.length > 5 ? `; and ${files.length - 5} more` : ''}`);
    }
    return lines.join('\n');
  });
}

function lineCount(text: string): number {
  return text.split('\n').length - (text.endsWith('\n') ? 1 : 0);
}

describe('source structure', () => {
  const src = join(repoRoot(), 'src');
  const files = new Map(tsFiles(src).map((f) => [f, readFileSync(join(src, ...f.split('/')), 'utf8')]));

  it('finds the source tree', () => {
    assert.ok(files.size > 100, `only ${files.size} .ts files under ${src}`);
    assert.ok(files.has('cli/main.ts'), `no cli/main.ts under ${src}`);
  });

  it('has folders that import one way (value imports)', () => {
    const problems = describeCycles(folderGraph(files));
    assert.equal(problems.length, 0, `\n${problems.join('\n')}`);
  });

  it('has unit tests placed like the modules they test (test/unit/X/ mirrors src/X/)', () => {
    const unit = join(repoRoot(), 'test', 'unit');
    const folders = new Set(tsFiles(unit).filter((f) => f.includes('/')).map((f) => posix.dirname(f)));
    const stray = [...folders].filter((d) => !existsSync(join(src, ...d.split('/')))).map((d) => `test/unit/${d}/ has no src/${d}/`);
    // package.json's globs reach test/unit/*, */* and */*/*: a deeper test would never run.
    const deep = tsFiles(unit).filter((f) => f.endsWith('.test.ts') && f.split('/').length > 3).map((f) => `test/unit/${f} is deeper than package.json's globs reach`);
    assert.deepEqual([...stray, ...deep], []);
  });

  it(`has no file over ${MAX_LINES} lines`, () => {
    const long = [...files].map(([f, t]) => [f, lineCount(t)] as const).filter(([, n]) => n > MAX_LINES);
    assert.deepEqual(long.map(([f, n]) => `src/${f}: ${n} lines`), []);
  });
});

describe('the folder-cycle check itself', () => {
  const graphOf = (o: Record<string, string>): FolderGraph => folderGraph(new Map(Object.entries(o)));

  it('names the cycle and the files causing it', () => {
    const g = graphOf({
      'state/endpoints.ts': "import { locate } from '../net/netns.js';\n",
      'net/netns.ts': "import { write } from '../state/atomic-file.js';\n",
      'state/atomic-file.ts': 'export const write = 1;\n',
      'sys/libc.ts': 'export const c = 1;\n',
    });
    const [msg, ...more] = describeCycles(g);
    assert.equal(more.length, 0);
    assert.match(msg!, /cycle: net -> state -> net/);
    assert.match(msg!, /state\/endpoints\.ts -> net\/netns\.ts/);
    assert.match(msg!, /net\/netns\.ts -> state\/atomic-file\.ts/);
  });

  it('counts re-exports, side-effect and dynamic imports, and mixed type/value imports', () => {
    for (const back of [
      "export { write } from '../state/atomic-file.js';",
      "import '../state/atomic-file.js';",
      "const m = await import('../state/atomic-file.js');",
      "import { type T, write } from '../state/atomic-file.js';",
      "import * as a from '../state/atomic-file.js';",
    ]) {
      const g = graphOf({ 'state/endpoints.ts': "import { x } from '../net/netns.js';", 'net/netns.ts': back });
      assert.equal(describeCycles(g).length, 1, back);
    }
  });

  it('leaves out type-only imports and exports, and imports within one folder', () => {
    for (const back of [
      "import type { T } from '../state/atomic-file.js';",
      "import { type T, type U } from '../state/atomic-file.js';",
      "export type { T } from '../state/atomic-file.js';",
      "export { type T } from '../state/atomic-file.js';",
      "let t: import('../state/atomic-file.js').T;",
      "import { x } from './ip.js';",
    ]) {
      const g = graphOf({ 'state/endpoints.ts': "import { x } from '../net/netns.js';", 'net/netns.ts': back });
      assert.deepEqual(describeCycles(g), [], back);
    }
  });

  it("treats vhost-user's subfolders as folders and src/ itself as one", () => {
    assert.equal(folderOf('vhost-user/virtq/split.ts'), 'vhost-user/virtq');
    assert.equal(folderOf('vhost-user/server.ts'), 'vhost-user');
    assert.equal(folderOf('backends/kernel/nat.ts'), 'backends');
    assert.equal(folderOf('errors.ts'), '.');
    const g = graphOf({
      'vhost-user/virtq/split.ts': "import { s } from '../switch/mac-table.js';",
      'vhost-user/switch/mac-table.ts': "import { q } from '../virtq/index.js';",
    });
    assert.match(describeCycles(g)[0]!, /vhost-user\/switch -> vhost-user\/virtq -> vhost-user\/switch/);
  });
});
