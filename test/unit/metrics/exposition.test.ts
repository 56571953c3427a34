// Prometheus text exposition (src/metrics/exposition.ts) on fixtures, the
// --metrics address parser, and the switch's families from a list view.
import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import { parseExposition, render } from '../../../src/metrics/exposition.js';
import { parseMetricsAddress } from '../../../src/metrics/http.js';
import { parseList } from '../../../src/vhost-user/control/view.js';
import { switchFamilies } from '../../../src/vhost-user/metrics.js';

describe('metrics exposition', () => {
  it('renders HELP, TYPE and samples with escaped label values', () => {
    const text = render([
      { name: 'x_total', help: 'a \\ b\nc', type: 'counter', samples: [{ labels: { socket: '/run/"a"\\b\n', port: '0' }, value: 3 }, { value: 0 }] },
      { name: 'y', help: 'g', type: 'gauge', samples: [{ value: NaN }, { labels: { k: 'v' }, value: Infinity }] },
    ]);
    assert.equal(text, [
      '# HELP x_total a \\\\ b\\nc',
      '# TYPE x_total counter',
      'x_total{socket="/run/\\"a\\"\\\\b\\n",port="0"} 3',
      'x_total 0',
      '# HELP y g',
      '# TYPE y gauge',
      'y NaN',
      'y{k="v"} +Inf',
      '',
    ].join('\n'));
    assert.equal(parseExposition(text).get('y{k="v"}'), Infinity);
    assert.throws(() => render([{ name: 'bad-name', help: '', type: 'gauge', samples: [] }]), /bad metric name/);
    assert.throws(() => render([{ name: 'a', help: '', type: 'gauge', samples: [{ labels: { __x: '1' }, value: 1 }] }]), /bad label name/);
  });

  it('--metrics takes an absolute socket path or IP:PORT, nothing else', () => {
    assert.deepEqual(parseMetricsAddress('/run/m.sock'), { path: '/run/m.sock' });
    assert.deepEqual(parseMetricsAddress('127.0.0.1:9469'), { host: '127.0.0.1', port: 9469 });
    assert.deepEqual(parseMetricsAddress('[::1]:0'), { host: '::1', port: 0 });
    for (const bad of ['m.sock', 'localhost:9469', '127.0.0.1', '127.0.0.1:70000', ':9469', '::1:80']) {
      assert.throws(() => parseMetricsAddress(bad), /is neither an absolute socket path nor IP:PORT/, bad);
    }
  });

  it('switch families: one sample per port and the uplink, labelled port, socket and owner', () => {
    const zero = { txFrames: 0, txNative: 0, rxFrames: 0, txDropped: 0, rxDropped: 0, badChains: 0, brokenQueues: 0 };
    const v = parseList({
      ports: [{ port: 2, socket: '/run/a.sock', client: false, mode: 'veb', connected: true, ready: false, owner: { uid: 1000, gid: 100 }, stats: { ...zero, txFrames: 9 } }],
      uplink: { port: 'uplink', kind: 'tap', device: 'br0', ifname: 'vhu0', stats: { ...zero, rxFrames: 4 } },
      macs: [],
    });
    const s = parseExposition(render(switchFamilies(v)));
    assert.equal(s.get('qemu_net_helper_switch_tx_frames_total{port="2",socket="/run/a.sock",owner="1000:100"}'), 9);
    assert.equal(s.get('qemu_net_helper_switch_rx_frames_total{port="uplink",socket="br0",owner=""}'), 4);
    assert.equal(s.get('qemu_net_helper_switch_port_connected{port="2",socket="/run/a.sock",owner="1000:100"}'), 1);
    assert.equal(s.get('qemu_net_helper_switch_port_ready{port="2",socket="/run/a.sock",owner="1000:100"}'), 0);
    assert.equal(s.get('qemu_net_helper_switch_ports'), 1);
  });
});
