// The broker's wire format against fixed lines: what a client may send, what a
// hostile one is refused for, and the replies the client accepts.
import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import { BrokerProtocolError, decodeReply, encodeReply, encodeRequest, MAX_REQUEST_BYTES } from '../../../src/broker/protocol.js';
import { decodeRequest } from '../../../src/broker/request.js';

const refused = (line: string, re: RegExp): void => {
  assert.throws(() => decodeRequest(line), (e: unknown) => e instanceof BrokerProtocolError && re.test(e.message));
};

describe('broker protocol: requests', () => {
  it('decodes each op from its exact bytes', () => {
    assert.deepEqual(decodeRequest('{"v":1,"op":"helper","argv":["--use-vnet","--fd=12","--br=br0"]}'), { v: 1, op: 'helper', argv: ['--use-vnet', '--fd=12', '--br=br0'] });
    assert.deepEqual(decodeRequest('{"v":1,"op":"up","options":{"mode":"vepa","dev":"eth1","mtu":1500,"vfPool":["pf0"],"transport":"vhost-user","vnetHdr":true}}'),
      { v: 1, op: 'up', options: { mode: 'vepa', dev: 'eth1', mtu: 1500, vfPool: ['pf0'], transport: 'vhost-user', vnetHdr: true } });
    assert.deepEqual(decodeRequest('{"v":1,"op":"down","id":"vm7"}'), { v: 1, op: 'down', id: 'vm7' });
    assert.deepEqual(decodeRequest('{"v":1,"op":"list"}'), { v: 1, op: 'list' });
    assert.deepEqual(decodeRequest('{"v":1,"op":"gc"}'), { v: 1, op: 'gc' });
  });
  it('round-trips what the client encodes', () => {
    const line = encodeRequest({ v: 1, op: 'helper', argv: ['--fd=3'] });
    assert.equal(line, '{"v":1,"op":"helper","argv":["--fd=3"]}\n');
    assert.deepEqual(decodeRequest(line.trimEnd()), { v: 1, op: 'helper', argv: ['--fd=3'] });
  });
  it("refuses Object.prototype's names as up options (own properties only)", () => {
    for (const k of ['__proto__', 'toString', 'hasOwnProperty', 'constructor', 'valueOf']) {
      refused(`{"v":1,"op":"up","options":{"${k}":["x"]}}`, new RegExp(`unknown option '${k}'`));
    }
  });
  it('refuses what a hostile client may send', () => {
    refused('not json', /not JSON/);
    refused('[1,2]', /JSON object/);
    refused('{"v":2,"op":"list"}', /unsupported protocol version 2/);
    refused('{"op":"list"}', /unsupported protocol version undefined/);
    refused('{"v":1,"op":"shutdown"}', /unknown op "shutdown"/);
    refused('{"v":1,"op":"list","env":{"PATH":"/tmp"}}', /unknown field 'env'/);
    refused('{"v":1,"op":"helper","argv":"--fd=3"}', /argv must be a list/);
    refused(JSON.stringify({ v: 1, op: 'helper', argv: Array.from({ length: 65 }, () => '--x') }), /at most 64 strings/);
    refused(JSON.stringify({ v: 1, op: 'helper', argv: ['x'.repeat(1025)] }), /argv must be a list/);
    refused('{"v":1,"op":"up","options":{"acl":"/tmp/mine"}}', /unknown option 'acl'/);
    refused('{"v":1,"op":"up","options":{"mtu":"9000"}}', /option 'mtu' must be a number/);
    refused('{"v":1,"op":"up","options":{"transport":"socket"}}', /transport' must be tap, macvtap or vhost-user/);
    refused('{"v":1,"op":"down","id":7}', /id must be a string/);
    refused(JSON.stringify({ v: 1, op: 'list', pad: 'x'.repeat(MAX_REQUEST_BYTES) }), /longer than/);
  });
});

describe('broker protocol: replies', () => {
  it('encodes and decodes a success and a refusal', () => {
    const ok = encodeReply({ v: 1, ok: true, exit: 0, lines: ['explain: bridge/tap: taken'] });
    assert.equal(ok, '{"v":1,"ok":true,"exit":0,"lines":["explain: bridge/tap: taken"]}\n');
    assert.deepEqual(decodeReply(ok.trimEnd()), { v: 1, ok: true, exit: 0, lines: ['explain: bridge/tap: taken'] });
    assert.deepEqual(decodeReply('{"v":1,"ok":false,"exit":3,"error":"access denied"}'), { v: 1, ok: false, exit: 3, error: 'access denied' });
  });
  it('refuses malformed answers', () => {
    for (const bad of ['garbage', '{"v":1,"ok":true}', '{"v":1,"ok":false,"exit":3}', '{"v":9,"ok":true,"exit":0}', '{"v":1,"ok":true,"exit":0,"lines":[1]}']) {
      assert.throws(() => decodeReply(bad), BrokerProtocolError, bad);
    }
  });
});
