// The shell view of the switch (control/view.ts) on `list` reply fixtures:
// reply checking, port state, ages, tables, flat stats rows with the uplink.
import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import { ageText, fdbText, parseList, portsText, showText, statsLines, statsRows, statsText } from '../../../../src/vhost-user/control/view.js';

const zero = { txFrames: 0, txNative: 0, rxFrames: 0, txDropped: 0, rxDropped: 0, badChains: 0, brokenQueues: 0 };
const reply = {
  ok: true,
  ports: [
    { port: 0, socket: '/run/a.sock', client: false, mode: 'veb', connected: true, ready: true, owner: { uid: 1000, gid: 1000 }, stats: { ...zero, txFrames: 5, rxFrames: 7, rxDropped: 1 } },
    { port: 3, socket: '/run/b.sock', client: true, mode: 'private', connected: false, ready: false, stats: zero },
  ],
  uplink: { port: 'uplink', kind: 'packet', device: 'eth1', ifname: 'eth1', stats: { ...zero, rxFrames: 2 } },
  macs: [{ mac: '52:54:00:00:00:0a', port: 0, ageMs: 1500 }, { mac: '02:00:00:00:00:99', port: 'uplink', ageMs: 61_000 }],
};

describe('switch view', () => {
  it('checks the list reply and names the first field that does not fit', () => {
    assert.equal(parseList(reply).ports.length, 2);
    // A newer switch's extra fields pass through (show --json prints them).
    assert.deepEqual((parseList({ ...reply, ports: [{ ...reply.ports[0], limits: { memoryMb: 512 } }] }).ports[0] as Record<string, unknown>).limits, { memoryMb: 512 });
    assert.throws(() => parseList({ ...reply, macs: [{ mac: 'x', port: -1 }] }), /macs\.0\.port/);
    assert.throws(() => parseList({ ok: true }), /unexpected list reply from the switch: ports/);
  });

  it('tables for people: owner, mode, state, counters, MACs; the uplink spelled "uplink"', () => {
    const v = parseList(reply);
    assert.equal(portsText(v), [
      'PORT  SOCKET       OWNER      MODE     STATE       TX  RX  DROPPED  MACS',
      '0     /run/a.sock  1000:1000  veb      ready       5   7   1        52:54:00:00:00:0a',
      '3     /run/b.sock  -          private  connecting  0   0   0        -',
      '',
    ].join('\n'));
    assert.match(showText(v, '/run/sw.ctl'), /^switch \/run\/sw\.ctl: 2 port\(s\), 2 learned MAC\(s\)\nuplink: packet socket on eth1, tx 0 rx 2 dropped 0, MACs 02:00:00:00:00:99\n/);
    // How frames leave, where the switch says it.
    const withTx = parseList({ ...reply, uplink: { ...reply.uplink, tx: 'AF_XDP (copy mode) for plain frames' } });
    assert.match(showText(withTx, '/run/sw.ctl'), /\nuplink: packet socket on eth1 \(out: AF_XDP \(copy mode\) for plain frames\), tx 0/);
    assert.equal(fdbText(v), [
      'PORT    MAC                AGE    SOCKET',
      '0       52:54:00:00:00:0a  1.5s   /run/a.sock',
      'uplink  02:00:00:00:00:99  1m01s  eth1',
      '',
    ].join('\n'));
    assert.equal(portsText(parseList({ ports: [], uplink: null, macs: [] })), 'no ports\n');
    assert.equal(ageText(undefined), '-');
  });

  it('stats: one row per port and one for the uplink, as JSON rows, a table and labelled log lines', () => {
    const v = parseList(reply);
    assert.deepEqual(statsRows(v).map((r) => [r.port, r.socket, r.txFrames, r.rxFrames, r.owner]), [[0, '/run/a.sock', 5, 7, { uid: 1000, gid: 1000 }], [3, '/run/b.sock', 0, 0, undefined], ['uplink', 'eth1', 0, 2, undefined]]);
    assert.match(statsText(v), /^uplink\s+eth1\s+0\s+0\s+2\s+0\s+0\s+0\s+0$/m);
    assert.deepEqual(statsLines(v)[2], 'stats port=uplink socket=eth1 txFrames=0 txNative=0 rxFrames=2 txDropped=0 rxDropped=0 badChains=0 brokenQueues=0');
  });
});
