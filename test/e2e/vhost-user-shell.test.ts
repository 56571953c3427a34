// The switch from the shell: a real `vhost-user serve` with two test guests,
// read and changed through `vhost-user show|ports|fdb|stats|add-port|
// remove-port|set-mode`; the control socket answering clients that half-close
// after their request (OpenBSD nc -N, and a socket shut down for writing).
import assert from 'node:assert/strict';
import { spawn, spawnSync } from 'node:child_process';
import { closeSync, existsSync, fstatSync, mkdtempSync, openSync, readFileSync, rmSync, statSync } from 'node:fs';
import { request as httpRequest } from 'node:http';
import { connect } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, before, describe, it } from 'node:test';
import { BIN } from '../lib/paths.js';
import { Serve, statsLinesOf } from '../lib/serve.js';
import { TestGuest } from '../lib/switch-guests.js';
import { parseExposition } from '../../src/metrics/exposition.js';
import { withNetNs } from '../lib/netns.js';

const MAC = { a: '52:54:00:00:01:0a', b: '52:54:00:00:01:0b' };
type Json = any; // eslint-disable-line @typescript-eslint/no-explicit-any

const cli = (args: string[]): { code: number | null; out: string; err: string; json: Json } => {
  const r = spawnSync(process.execPath, [BIN, ...args], { encoding: 'utf8', env: { ...process.env, QEMU_NET_HELPER_SWITCH: '' }, timeout: 60_000 });
  let json: Json = null;
  try { json = JSON.parse(r.stdout); } catch { /* not JSON */ }
  return { code: r.status, out: r.stdout, err: r.stderr, json };
};

/** GET /metrics over a unix socket or TCP: status and body. */
function scrape(where: { socketPath: string } | { host: string; port: number }, path = '/metrics', method = 'GET'): Promise<{ status: number; body: string; type: string }> {
  return new Promise((resolve, reject) => {
    const req = httpRequest({ ...where, path, method, timeout: 20_000 }, (res) => {
      let body = '';
      res.setEncoding('utf8').on('data', (d: string) => { body += d; }).on('end', () => resolve({ status: res.statusCode ?? 0, body, type: String(res.headers['content-type']) }));
    });
    req.on('timeout', () => req.destroy(new Error('metrics: no answer within 20 s')));
    req.on('error', reject);
    req.end();
  });
}

/** One request line, then shutdown(SHUT_WR); everything the switch sends until it closes. */
function halfClosed(path: string, line: string): Promise<string> {
  return new Promise((resolve, reject) => {
    const s = connect({ path, allowHalfOpen: true });
    let got = '';
    s.setEncoding('utf8');
    s.on('data', (d: string) => { got += d; });
    s.once('connect', () => s.end(line));
    s.once('end', () => { s.destroy(); resolve(got); });
    s.once('error', reject);
    setTimeout(() => { s.destroy(); reject(new Error(`no end of reply within 20 s; got ${JSON.stringify(got)}`)); }, 20_000).unref();
  });
}

/** `vhost-user serve ARGS` to its end: exit code and stderr (a failing start exits at once). */
const serveOnce = (args: string[], as?: number): { code: number | null; err: string } => {
  const cmd = [...(as !== undefined ? ['setpriv', `--reuid=${as}`, `--regid=${as}`, '--clear-groups'] : []), process.execPath, BIN, 'vhost-user', 'serve', ...args, '--config', 'none'];
  // oclif reads $HOME's data directory: root's is not nobody's to read.
  const r = spawnSync(cmd[0]!, cmd.slice(1), { encoding: 'utf8', timeout: 60_000, env: { ...process.env, ...(as !== undefined ? { HOME: '/nonexistent' } : {}) } });
  return { code: r.status, err: r.stderr };
};

describe('the switch from the shell', () => {
  let dir: string;
  before(() => { dir = mkdtempSync(join(tmpdir(), 'qnh-swsh-')); });
  after(() => rmSync(dir, { recursive: true, force: true }));

  it('the control socket answers clients that half-close after their request', async () => {
    const ctl = join(dir, 'hc.ctl');
    const s = new Serve(['--control', ctl, '--socket', join(dir, 'hc.sock'), '--metrics', '127.0.0.1:0']);
    try {
      await s.ready([ctl]);
      // Metrics on loopback TCP too (port 0: the kernel picks; the log says which).
      assert.ok(await s.waitLog(/metrics on 127\.0\.0\.1:\d+ /), s.log());
      const port = Number(/metrics on 127\.0\.0\.1:(\d+) /.exec(s.log())![1]);
      const m = await scrape({ host: '127.0.0.1', port });
      assert.equal(m.status, 200);
      assert.match(m.body, /^qemu_net_helper_switch_ports 1$/m);
      const r = JSON.parse(await halfClosed(ctl, '{"op":"list","id":7}\n')) as Json;
      assert.equal(r.ok, true);
      assert.equal(r.id, 7);
      assert.equal(r.ports.length, 1);
      // Two requests, the last without its newline: both answered, in order, then the switch closes.
      const two = (await halfClosed(ctl, '{"op":"list","id":1}\n{"op":"set-mode","port":0,"mode":"vepa","id":2}')).trim().split('\n').map((l) => JSON.parse(l) as Json);
      assert.deepEqual(two.map((x) => [x.id, x.ok]), [[1, true], [2, true]]);
      // What the issue tried: OpenBSD netcat, -N shuts the socket down after stdin's EOF.
      const nc = spawnSync('nc', ['-N', '-U', ctl], { input: '{"op":"list"}\n', encoding: 'utf8', timeout: 20_000 });
      assert.equal(nc.status, 0, nc.stderr);
      const l = JSON.parse(nc.stdout) as Json;
      assert.equal(l.ok, true);
      assert.equal(l.ports[0].mode, 'vepa');
    } finally {
      await s.stop();
    }
  });

  it('serve: a socket it cannot create is one line naming the path and the reason; a second switch on one --control is named', async () => {
    const noDir = serveOnce(['--socket', '/nonexistent/dir/a.sock']);
    assert.deepEqual([noDir.code, noDir.err], [5, 'qemu-net-helper: cannot create socket /nonexistent/dir/a.sock: directory /nonexistent/dir does not exist; create it or pass another --socket\n']);
    const noCtlDir = serveOnce(['--control', join(dir, 'none', 'sw.ctl')]);
    assert.equal(noCtlDir.code, 5);
    assert.match(noCtlDir.err, /^qemu-net-helper: cannot create socket .*none\/sw\.ctl: directory .*none does not exist; create it or pass another --control\n$/);
    // Root owns dir (0700 from mkdtemp): nobody may not create a socket in it.
    const denied = serveOnce(['--socket', join(dir, 'denied.sock')], 65534);
    assert.equal(denied.code, 4, denied.err);
    assert.match(denied.err, /^qemu-net-helper: cannot create socket .*denied\.sock: no permission to write in /);
    const long = serveOnce(['--socket', `/tmp/${'x'.repeat(120)}.sock`]);
    assert.equal(long.code, 2);
    assert.match(long.err, /is too long \(\d+ bytes; unix sockets allow 107\); pass a shorter --socket\n$/);

    const ctl = join(dir, 'one.ctl');
    const first = new Serve(['--control', ctl]);
    try {
      await first.ready([ctl]);
      const second = serveOnce(['--control', ctl, '--socket', join(dir, 'second.sock')]);
      assert.equal(second.code, 10);
      assert.equal(second.err, `qemu-net-helper: another vhost-user switch already serves the control socket ${ctl}; stop it, add ports to it ('qemu-net-helper vhost-user add-port SOCKET --control ${ctl}'), or pass another --control\n`);
      assert.ok(!existsSync(join(dir, 'second.sock')), 'the refused switch made nothing');
      assert.equal(cli(['vhost-user', 'ports', '--control', ctl, '--json']).json.length, 0, 'the first switch goes on');
    } finally {
      await first.stop();
    }
  });

  it('--stats-interval: labelled lines per port and for the uplink; --log-level debug logs events, warn drops info', async () => {
    await withNetNs(async (ns) => {
      ns.ip('link', 'add', 'up0', 'type', 'veth', 'peer', 'name', 'up1');
      ns.ip('link', 'set', 'up0', 'up');
      ns.ip('link', 'set', 'up1', 'up');
      const a = join(dir, 'log-a.sock');
      const s = new Serve(['--socket', a, '--uplink', 'up0', '--stats-interval', '1', '--log-level', 'debug'], ns);
      try {
        await s.ready([a]);
        assert.ok(await s.waitLog(/stats port=uplink/, 20_000), s.log());
        const lines = statsLinesOf(s.log());
        assert.deepEqual(lines.slice(0, 2).map((l) => [l.port, l.socket, l.txFrames, l.brokenQueues]), [[0, a, 0, 0], ['uplink', 'up0', 0, 0]]);
        assert.match(s.log(), /^vhost-user: event \{"event":"port-added","port":0,/m);
        assert.doesNotMatch(s.log(), /vhost-user: \[/, 'no unlabelled JSON arrays any more');
      } finally {
        await s.stop();
      }
      const w = new Serve(['--socket', a, '--log-level', 'warn'], ns);
      try {
        // Nothing at info: wait for the socket, then for a warning we provoke (a second front-end).
        const deadline = Date.now() + 20_000;
        while (!existsSync(a) && Date.now() < deadline) await new Promise((r) => setTimeout(r, 50));
        const g1 = await TestGuest.connect(a, MAC.a);
        const second = connect(a);
        second.on('error', () => undefined);
        assert.ok(await w.waitLog(/port 0: refusing a second front-end/), w.log());
        second.destroy();
        g1.close();
        assert.doesNotMatch(w.log(), /serving|front-end connected/);
      } finally {
        await w.stop();
      }
    }, 'qnh-swlog');
  });

  it('under the journal (JOURNAL_STREAM names stderr) each line carries its priority; an inherited JOURNAL_STREAM changes nothing', async () => {
    const a = join(dir, 'j.sock');
    for (const journal of [true, false]) {
      const file = join(dir, `stderr-${journal}`);
      const fd = openSync(file, 'w');
      const st = fstatSync(fd);
      const p = spawn(process.execPath, [BIN, 'vhost-user', 'serve', '--socket', a, '--config', 'none', '--log-level', 'debug'], {
        stdio: ['ignore', 'ignore', fd], env: { ...process.env, JOURNAL_STREAM: `${st.dev}:${journal ? st.ino : st.ino + 1}` },
      });
      closeSync(fd);
      const exited = new Promise((r) => p.once('exit', r));
      try {
        const deadline = Date.now() + 30_000;
        while (!/serving/.test(readFileSync(file, 'utf8')) && Date.now() < deadline) await new Promise((r) => setTimeout(r, 50));
      } finally {
        p.kill('SIGTERM');
        await exited;
      }
      const text = readFileSync(file, 'utf8');
      if (journal) {
        assert.match(text, /^<6>vhost-user: serving 1 port\(s\)/m);
        assert.match(text, /^<7>vhost-user: event \{"event":"port-added"/m);
        assert.ok(text.split('\n').filter(Boolean).every((l) => /^<[3467]>/.test(l)), text);
      } else {
        assert.match(text, /^vhost-user: serving 1 port\(s\)/m);
        assert.doesNotMatch(text, /^</m);
      }
    }
    const bad = serveOnce(['--socket', '/nonexistent/j.sock']);
    assert.doesNotMatch(bad.err, /^</, 'not under the journal: no prefix');
  });

  it('show, ports, fdb and stats of a switch with two guests; ports added, re-moded and removed as commands', async () => {
    const [a, b, c] = ['a', 'b', 'c'].map((n) => join(dir, `${n}.sock`)) as [string, string, string];
    const ctl = join(dir, 'sw.ctl');
    const metrics = join(dir, 'metrics.sock');
    const s = new Serve(['--socket', a, '--socket', b, '--control', ctl, '--metrics', metrics, '--socket-mode', '0660']);
    const guests: TestGuest[] = [];
    try {
      await s.ready([a, b, ctl]);
      const ga = await TestGuest.connect(a, MAC.a);
      guests.push(ga);
      const gb = await TestGuest.connect(b, MAC.b);
      guests.push(gb);
      for (let i = 0; i < 3; i++) {
        await ga.send(MAC.b, `a${i}`);
        await gb.waitTag(`a${i}`);
      }
      await gb.send(MAC.a, 'b0');
      await ga.waitTag('b0');

      const show = cli(['vhost-user', 'show', '--control', ctl]);
      assert.equal(show.code, 0, show.err);
      assert.match(show.out, /2 port\(s\), 2 learned MAC\(s\)/);
      assert.match(show.out, /uplink: none/);
      const rows = show.out.split('\n').filter((l) => /^\d /.test(l)).map((l) => l.split(/\s+/));
      assert.deepEqual(rows, [
        ['0', a, '0:0', 'veb', 'ready', '3', '1', '0', MAC.a],
        ['1', b, '0:0', 'veb', 'ready', '1', '3', '0', MAC.b],
      ]);
      const sj = cli(['vhost-user', 'show', '--control', ctl, '--json']);
      assert.equal(sj.code, 0, sj.err);
      assert.deepEqual(sj.json.ports.map((p: Json) => [p.port, p.socket, p.mode, p.connected, p.ready, p.stats.txFrames, p.stats.rxFrames]), [[0, a, 'veb', true, true, 3, 1], [1, b, 'veb', true, true, 1, 3]]);

      const fdb = cli(['vhost-user', 'fdb', '--control', ctl, '--json']);
      assert.equal(fdb.code, 0, fdb.err);
      assert.deepEqual(fdb.json.map((m: Json) => [m.mac, m.port]).sort(), [[MAC.a, 0], [MAC.b, 1]]);
      for (const m of fdb.json) assert.ok(m.ageMs >= 0 && m.ageMs < 300_000, `age ${m.ageMs}`);
      const fdbText = cli(['vhost-user', 'fdb', '--control', ctl]);
      assert.match(fdbText.out, new RegExp(`^0\\s+${MAC.a}\\s+\\d+\\.\\ds\\s+${a}$`, 'm'));

      const st = cli(['vhost-user', 'stats', '--control', ctl, '--json']);
      assert.equal(st.code, 0, st.err);
      assert.deepEqual(st.json.map((r: Json) => [r.port, r.txFrames, r.rxFrames, r.txDropped, r.rxDropped]), [[0, 3, 1, 0, 0], [1, 1, 3, 0, 0]]);
      assert.match(cli(['vhost-user', 'stats', '--control', ctl]).out, /^PORT\s+SOCKET\s+txFrames\s+txNative\s+rxFrames/m);

      // The metrics endpoint counts what `stats` counts.
      assert.equal(statSync(metrics).mode & 0o777, 0o660, 'the metrics socket takes --socket-mode like the ports');
      const m = await scrape({ socketPath: metrics });
      assert.equal(m.status, 200);
      assert.equal(m.type, 'text/plain; version=0.0.4; charset=utf-8');
      assert.match(m.body, /^# HELP qemu_net_helper_switch_tx_frames_total .+\n# TYPE qemu_net_helper_switch_tx_frames_total counter\n/m);
      const samples = parseExposition(m.body);
      const names: [string, string][] = [['tx_frames_total', 'txFrames'], ['tx_native_frames_total', 'txNative'], ['rx_frames_total', 'rxFrames'], ['tx_dropped_total', 'txDropped'], ['rx_dropped_total', 'rxDropped'], ['bad_chains_total', 'badChains']];
      for (const row of st.json) {
        for (const [metric, field] of names) {
          assert.equal(samples.get(`qemu_net_helper_switch_${metric}{port="${row.port}",socket="${row.socket}",owner="0:0"}`), row[field], `${metric} of port ${row.port} (root's: owner 0:0)`);
        }
      }
      assert.equal(samples.get(`qemu_net_helper_switch_port_ready{port="0",socket="${a}",owner="0:0"}`), 1);
      assert.equal(samples.get('qemu_net_helper_switch_ports'), 2);
      assert.equal(samples.get('qemu_net_helper_switch_learned_macs'), 2);
      assert.equal((await scrape({ socketPath: metrics }, '/other')).status, 404);
      assert.equal((await scrape({ socketPath: metrics }, '/metrics', 'POST')).status, 405);

      // Ports as commands.
      const add = cli(['vhost-user', 'add-port', c, '--mode', 'private', '--control', ctl]);
      assert.equal(add.code, 0, add.err);
      assert.equal(add.out.trim(), `port 2: ${c}`);
      assert.ok(existsSync(c));
      const sm = cli(['vhost-user', 'set-mode', '2', 'vepa', '--control', ctl, '--json']);
      assert.deepEqual([sm.code, sm.json], [0, { port: 2, mode: 'vepa' }]);
      const ports = cli(['vhost-user', 'ports', '--control', ctl, '--json']);
      assert.deepEqual(ports.json.map((p: Json) => [p.port, p.mode, p.connected]), [[0, 'veb', true], [1, 'veb', true], [2, 'vepa', false]]);
      const rm = cli(['vhost-user', 'remove-port', c, '--control', ctl]);
      assert.equal(rm.code, 0, rm.err);
      assert.equal(rm.out.trim(), `removed port 2: ${c}`);
      assert.ok(!existsSync(c));
      assert.ok(await s.waitLog(/port 2: removed/), s.log());

      // Failures: one line, documented codes.
      const gone = cli(['vhost-user', 'remove-port', '2', '--control', ctl]);
      assert.equal(gone.code, 5);
      assert.equal(gone.err, `qemu-net-helper: the switch at ${ctl} has no port 2; 'qemu-net-helper vhost-user ports' lists them\n`);
      const dup = cli(['vhost-user', 'add-port', a, '--control', ctl]);
      assert.equal(dup.code, 10);
      assert.match(dup.err, /^qemu-net-helper: the switch at .* refused: socket .* is already port 0/);
      const none = cli(['vhost-user', 'show', '--control', join(dir, 'nothing.ctl')]);
      assert.equal(none.code, 5);
      assert.match(none.err, /^qemu-net-helper: no vhost-user switch answers at .*nothing\.ctl \(ENOENT\)/);
    } finally {
      for (const g of guests) g.close();
      await s.stop();
    }
    assert.ok(!existsSync(metrics), 'the metrics socket is removed on exit');
  });
});
