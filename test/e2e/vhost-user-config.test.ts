// A switch that survives a restart as configured: `vhost-user serve --config
// FILE` starts the file's ports; a port added at run time and saved (`vhost-user
// save`) is there after a restart; a bad file is one line, exit 8.
import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import { existsSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, before, describe, it } from 'node:test';
import { BIN } from '../lib/paths.js';
import { Serve } from '../lib/serve.js';

type Json = any; // eslint-disable-line @typescript-eslint/no-explicit-any

const cli = (args: string[]): { code: number | null; out: string; err: string; json: Json } => {
  const r = spawnSync(process.execPath, [BIN, ...args], { encoding: 'utf8', timeout: 60_000 });
  let json: Json = null;
  try { json = JSON.parse(r.stdout); } catch { /* not JSON */ }
  return { code: r.status, out: r.stdout, err: r.stderr, json };
};

describe('switch configuration file', () => {
  let dir: string;
  before(() => { dir = mkdtempSync(join(tmpdir(), 'qnh-swcfg-')); });
  after(() => rmSync(dir, { recursive: true, force: true }));

  it('two ports from the file; a third added and saved; after a restart all three, modes kept', async () => {
    const [a, b, c] = ['a', 'b', 'c'].map((n) => join(dir, `${n}.sock`)) as [string, string, string];
    const ctl = join(dir, 'sw.ctl');
    const file = join(dir, 'switch.json');
    writeFileSync(file, JSON.stringify({ control: ctl, mode: 'veb', ports: [{ socket: a }, { socket: b, mode: 'private' }] }));
    const ports = (): Json => cli(['vhost-user', 'ports', '--control', ctl, '--json']).json.map((p: Json) => [p.port, p.socket, p.mode, p.client]);

    let s = new Serve(['--config', file]);
    try {
      await s.ready([a, b, ctl]);
      assert.deepEqual(ports(), [[0, a, 'veb', false], [1, b, 'private', false]]);
      const add = cli(['vhost-user', 'add-port', c, '--mode', 'vepa', '--control', ctl]);
      assert.equal(add.code, 0, add.err);
      const saved = cli(['vhost-user', 'save', '--control', ctl, '--json']);
      assert.deepEqual([saved.code, saved.json], [0, { file, ports: 3 }], saved.err);
      assert.ok(await s.waitLog(/saved 3 port\(s\) to /));
    } finally {
      await s.stop();
    }
    assert.ok(!existsSync(c), 'the stopped switch removed its sockets');
    const written = JSON.parse(readFileSync(file, 'utf8')) as Json;
    assert.deepEqual(written.ports, [{ socket: a }, { socket: b, mode: 'private' }, { socket: c, mode: 'vepa' }]);
    assert.equal(written.control, ctl);

    s = new Serve(['--config', file]);
    try {
      await s.ready([a, b, c, ctl]);
      assert.deepEqual(ports(), [[0, a, 'veb', false], [1, b, 'private', false], [2, c, 'vepa', false]]);
    } finally {
      await s.stop();
    }
  });

  it('flags beside the file win; --config none reads nothing and cannot save; a bad file is one line, exit 8', async () => {
    const file = join(dir, 'flags.json');
    const ctl = join(dir, 'f.ctl');
    const a = join(dir, 'fa.sock');
    writeFileSync(file, JSON.stringify({ control: join(dir, 'unused.ctl'), mode: 'private', ports: [{ socket: a }] }));
    const s = new Serve(['--config', file, '--control', ctl, '--mode', 'vepa', '--socket', join(dir, 'fb.sock')]);
    try {
      await s.ready([a, ctl]);
      assert.ok(!existsSync(join(dir, 'unused.ctl')));
      const p = cli(['vhost-user', 'ports', '--control', ctl, '--json']).json;
      assert.deepEqual(p.map((x: Json) => [x.socket, x.mode]), [[a, 'vepa'], [join(dir, 'fb.sock'), 'vepa']]);
    } finally {
      await s.stop();
    }

    const n = new Serve(['--config', 'none', '--control', ctl]);
    try {
      await n.ready([ctl]);
      const r = cli(['vhost-user', 'save', '--control', ctl]);
      assert.equal(r.code, 10);
      assert.match(r.err, /^qemu-net-helper: the switch at .* refused: this switch runs without a configuration file \(--config none\): nothing to save to\n$/);
    } finally {
      await n.stop();
    }

    const bad = join(dir, 'bad.json');
    for (const [text, why] of [
      ['{"ports":[{"socket":"relative.sock"}]}', /ports\.0\.socket: an absolute path/],
      ['{"ports":[{"socket":"/a.sock","mode":"bridge"}]}', /ports\.0\.mode: /],
      ['{"uplink":{"device":"eth0","bridge":"br0"}}', /uplink: /],
      ['{"queues":99}', /queues: /],
      ['{"port":[]}', /Unrecognized key: "port"/],
      [`{"ports":[{"socket":"/x.sock"},{"socket":"/x.sock"}]}`, /port socket \/x\.sock is listed twice/],
      ['{"ports":', /is not valid JSON/],
    ] as [string, RegExp][]) {
      writeFileSync(bad, text);
      const r = spawnSync(process.execPath, [BIN, 'vhost-user', 'serve', '--config', bad], { encoding: 'utf8', timeout: 60_000 });
      assert.equal(r.status, 8, `${text}: ${r.stderr}`);
      assert.match(r.stderr, why, text);
      assert.equal(r.stderr.split('\n').length, 2, `one line: ${r.stderr}`);
    }
    const missing = spawnSync(process.execPath, [BIN, 'vhost-user', 'serve', '--config', join(dir, 'missing.json')], { encoding: 'utf8', timeout: 60_000 });
    assert.equal(missing.status, 8);
    assert.match(missing.stderr, /cannot read the switch configuration .*missing\.json: ENOENT/);
  });
});
