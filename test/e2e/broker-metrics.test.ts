// `daemon --metrics`: the broker's Prometheus counters after real requests
// from an unprivileged user (one allowed, one refused by the ACL) and a
// malformed one: connections, requests by op/result/exit code, endpoints.
import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import { chmodSync, closeSync, existsSync, fstatSync, mkdirSync, mkdtempSync, openSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { request as httpRequest } from 'node:http';
import { connect } from 'node:net';
import { join } from 'node:path';
import { after, before, describe, it } from 'node:test';
import { parseExposition } from '../../src/metrics/exposition.js';
import { startTestBroker, type BrokerRun } from '../lib/broker.js';
import { NetNs } from '../lib/netns.js';
import { BIN } from '../lib/paths.js';

const USER = 65534;

function scrape(socketPath: string): Promise<string> {
  return new Promise((resolve, reject) => {
    const req = httpRequest({ socketPath, path: '/metrics', timeout: 20_000 }, (res) => {
      let body = '';
      res.setEncoding('utf8').on('data', (d: string) => { body += d; }).on('end', () => (res.statusCode === 200 ? resolve(body) : reject(new Error(`status ${res.statusCode}: ${body}`))));
    });
    req.on('timeout', () => req.destroy(new Error('no answer within 20 s')));
    req.on('error', reject);
    req.end();
  });
}

describe('broker metrics', () => {
  let ns: NetNs;
  let b: BrokerRun | undefined;
  let dir: string;
  before(() => {
    ns = NetNs.create();
    ns.addBridge('br0');
    ns.addBridge('br9');
    dir = mkdtempSync(join(tmpdir(), 'qnh-bm-'));
  });
  after(async () => {
    await b?.stop();
    ns?.destroy();
    rmSync(dir, { recursive: true, force: true });
  });

  it('a --metrics it cannot serve stops the start with one line', () => {
    const r = spawnSync('ip', ['netns', 'exec', ns.name, process.execPath, BIN, 'daemon', '--socket', join(dir, 'never.sock'), '--acl', '/dev/null', '--metrics', join(dir, 'no', 'm.sock')], { encoding: 'utf8', timeout: 60_000 });
    assert.equal(r.status, 5, r.stderr);
    assert.match(r.stderr, /^qemu-net-helper: cannot create socket .*no\/m\.sock: directory .*no does not exist; create it or pass another --metrics\n$/);
    assert.ok(!existsSync(join(dir, 'never.sock')), 'the broker never listened');
    const bad = spawnSync(process.execPath, [BIN, 'daemon', '--metrics', 'localhost:9'], { encoding: 'utf8', timeout: 60_000 });
    assert.equal(bad.status, 2, bad.stderr);
  });

  it('--log-level and journald priorities: info lines carry <6> under the journal; warn drops the decisions', async () => {
    const acl = join(dir, 'bridge.conf');
    writeFileSync(acl, `allow br0 user=${USER}\n`);
    mkdirSync(join(dir, 'config'), { recursive: true });
    chmodSync(dir, 0o755); // nobody reaches the broker's socket through it
    for (const level of ['info', 'warn']) {
      const state = join(dir, `state-${level}`);
      mkdirSync(state, { mode: 0o700 });
      const sock = join(dir, `broker-${level}.sock`);
      const file = join(dir, `stderr-${level}`);
      const fd = openSync(file, 'w');
      const st = fstatSync(fd);
      const p = ns.spawn(process.execPath, [BIN, 'daemon', '--socket', sock, '--acl', acl, '--config', join(dir, 'config'), '--log-level', level], {
        stdio: ['ignore', 'ignore', fd], env: { ...process.env, QEMU_NET_HELPER_STATE_DIR: state, JOURNAL_STREAM: `${st.dev}:${st.ino}` },
      });
      closeSync(fd);
      const exited = new Promise((r) => p.once('exit', r));
      try {
        const deadline = Date.now() + 60_000;
        while (!existsSync(sock) && Date.now() < deadline) await new Promise((r) => setTimeout(r, 50));
        const r = spawnSync('ip', ['netns', 'exec', ns.name, 'setpriv', `--reuid=${USER}`, `--regid=${USER}`, '--clear-groups', process.execPath, BIN, 'list', '--json'], { encoding: 'utf8', env: { PATH: process.env.PATH, QEMU_NET_HELPER_BROKER: sock } });
        assert.equal(r.status, 0, r.stderr);
        if (level === 'info') {
          const deadline2 = Date.now() + 20_000;
          while (!/: list: /.test(readFileSync(file, 'utf8')) && Date.now() < deadline2) await new Promise((res) => setTimeout(res, 50));
        }
      } finally {
        p.kill('SIGTERM');
        await exited;
      }
      const text = readFileSync(file, 'utf8');
      if (level === 'info') {
        assert.match(text, /^<6>broker: listening on /m);
        assert.match(text, new RegExp(`^<6>broker: uid=${USER} pid=\\d+ comm=\\S+: list: `, 'm'));
      } else {
        assert.equal(text, '', 'warn: no decision and no start line');
      }
    }
  });

  it('counts connections and requests by op, result and exit code; endpoints on record', async () => {
    const metrics = join(dir, 'metrics.sock');
    b = await startTestBroker(ns, { acl: `allow br0 user=${USER}\n`, args: ['--metrics', metrics], startTimeoutMs: 60_000 });
    await b.waitForLine(/metrics on /);
    const env = b.clientEnv({ PATH: process.env.PATH });
    const cliAs = (args: string[]): number | null => spawnSync('ip', ['netns', 'exec', ns.name, 'setpriv', `--reuid=${USER}`, `--regid=${USER}`, '--clear-groups', process.execPath, BIN, ...args], { encoding: 'utf8', env }).status;

    assert.equal(cliAs(['list', '--json']), 0);
    assert.equal(cliAs(['up', '--mode', 'bridge', '--dev', 'br9', '--json']), 3, 'br9 is not in the ACL');
    await new Promise<void>((resolve, reject) => {
      const s = connect(b!.socket);
      s.on('error', reject);
      s.on('close', () => resolve());
      s.on('connect', () => s.write('not a request\n'));
      s.resume();
    });
    await b.waitForLine(/bad request/);

    const m = parseExposition(await scrape(metrics));
    assert.equal(m.get('qemu_net_helper_broker_requests_total{op="list",result="ok",exit_code="0"}'), 1);
    assert.equal(m.get('qemu_net_helper_broker_requests_total{op="up",result="error",exit_code="3"}'), 1);
    assert.equal(m.get('qemu_net_helper_broker_requests_total{op="invalid",result="error",exit_code="2"}'), 1);
    assert.equal(m.get('qemu_net_helper_broker_connections_total'), 3);
    assert.equal(m.get('qemu_net_helper_broker_endpoints'), 0);
    await b.stop();
    assert.ok(!existsSync(metrics), 'the metrics socket goes with the broker');
  });
});
