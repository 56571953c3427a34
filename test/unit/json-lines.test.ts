// src/json-lines.ts on a real unix socket: lines split across writes and
// several in one write, blank lines skipped, the end reported once.
import assert from 'node:assert/strict';
import { mkdtempSync, rmSync } from 'node:fs';
import { connect, createServer, type Socket } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { test } from 'node:test';
import { readJsonLines } from '../../src/json-lines.js';

test('readJsonLines: whole lines however the bytes arrive, blank lines skipped, close reported once', async () => {
  const dir = mkdtempSync(join(tmpdir(), 'qnh-jl-'));
  const path = join(dir, 's.sock');
  let far: Socket | undefined;
  const server = createServer((s) => { far = s; });
  await new Promise<void>((r) => server.listen(path, r));
  try {
    const sock = connect(path);
    await new Promise<void>((r) => sock.once('connect', () => r()));
    const got: Record<string, unknown>[] = [];
    let closes = 0;
    readJsonLines(sock, (m) => got.push(m), () => { closes++; });
    while (!far) await new Promise((r) => setTimeout(r, 5));
    far.write('{"a":1}\n{"b":');
    far.write('"x\\n y"}\n\n  \n{"event":"e"}');
    far.write('\n');
    far.end('{"tail":true}'); // no newline: not a line, never handed on
    await new Promise<void>((r) => sock.once('close', () => r()));
    assert.deepEqual(got, [{ a: 1 }, { b: 'x\n y' }, { event: 'e' }]);
    assert.equal(closes, 1);
  } finally {
    server.close();
    rmSync(dir, { recursive: true, force: true });
  }
});
