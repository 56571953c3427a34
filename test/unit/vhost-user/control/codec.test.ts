// The control socket's JSON-line codec against fixed byte input: requests
// parsed into typed objects, every malformed kind refused with a clear
// message (and the request id when it was readable), line splitting across
// chunks, and the line length cap.
import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import { ControlError, errorReply, LineSplitter, MAX_LINE, okReply, parseRequest } from '../../../../src/vhost-user/control/codec.js';

const refused = (line: string, re: RegExp, id?: unknown): void => {
  assert.throws(() => parseRequest(line), (e: unknown) => {
    assert.ok(e instanceof ControlError, String(e));
    assert.match(e.message, re);
    assert.equal(e.id, id);
    return true;
  });
};

describe('control codec: requests', () => {
  it('add-port with defaults and with every field', () => {
    assert.deepEqual(parseRequest('{"op":"add-port","socket":"/run/a.sock"}'), { op: 'add-port', socket: '/run/a.sock', client: false });
    assert.deepEqual(parseRequest('{"op":"add-port","socket":"/run/a.sock","client":true,"mode":"private","id":7}'),
      { op: 'add-port', socket: '/run/a.sock', client: true, mode: 'private', id: 7 });
  });

  it('remove-port by number or by socket, set-mode, list, events', () => {
    assert.deepEqual(parseRequest('{"op":"remove-port","port":3}'), { op: 'remove-port', port: 3 });
    assert.deepEqual(parseRequest('{"op":"remove-port","socket":"/s"}'), { op: 'remove-port', socket: '/s' });
    assert.deepEqual(parseRequest('{"op":"set-mode","port":0,"mode":"vepa","id":"x"}'), { op: 'set-mode', port: 0, mode: 'vepa', id: 'x' });
    assert.deepEqual(parseRequest('{"op":"list"}'), { op: 'list' });
    assert.deepEqual(parseRequest('{"id":null,"op":"events"}'), { op: 'events', id: null });
  });

  it('refuses malformed requests with one clear message each, keeping the id', () => {
    refused('{"op":"add-port"', /not valid JSON/);
    refused('[1,2]', /must be a JSON object/);
    refused('"list"', /must be a JSON object/);
    refused('{"op":"reboot","id":1}', /"op" must be one of add-port, remove-port, set-mode, list, events/, 1);
    refused('{"op":"list","id":{"a":1}}', /"id" must be a string/);
    refused('{"op":"add-port","id":2}', /add-port needs "socket"/, 2);
    refused('{"op":"add-port","socket":""}', /non-empty path/);
    refused(`{"op":"add-port","socket":"/${'x'.repeat(120)}"}`, /longer than a unix socket path/);
    refused('{"op":"add-port","socket":"/a\\u0000b"}', /non-empty path/);
    refused('{"op":"add-port","socket":"/a","client":"yes"}', /"client" must be true or false/);
    refused('{"op":"add-port","socket":"/a","mode":"bridge"}', /"mode" must be one of veb, vepa, private/);
    refused('{"op":"add-port","socket":"/a","path":"/b"}', /unknown field "path" for add-port/);
    refused('{"op":"remove-port"}', /exactly one of "port" and "socket"/);
    refused('{"op":"remove-port","port":1,"socket":"/a"}', /exactly one of "port" and "socket"/);
    refused('{"op":"remove-port","port":-1}', /"port" must be a port number/);
    refused('{"op":"remove-port","port":1.5}', /"port" must be a port number/);
    refused('{"op":"set-mode","port":1}', /set-mode needs "port" and "mode"/);
    refused('{"op":"list","__proto__":{"x":1}}', /unknown field "__proto__"/);
  });
});

describe('control codec: replies', () => {
  it('encodes one line per reply, id echoed', () => {
    assert.equal(okReply(3, { port: 1, socket: '/a' }), '{"ok":true,"id":3,"port":1,"socket":"/a"}\n');
    assert.equal(okReply(undefined), '{"ok":true}\n');
    assert.equal(errorReply('q', 'no port 9'), '{"ok":false,"id":"q","error":"no port 9"}\n');
  });
});

describe('control codec: line splitting', () => {
  it('joins lines cut across chunks, also inside a UTF-8 character, and skips blank lines', () => {
    const s = new LineSplitter();
    const bytes = Buffer.from('{"op":"list","id":"é"}\r\n\n{"op":"ev');
    assert.deepEqual(s.push(bytes.subarray(0, 20)), []);
    assert.deepEqual(s.push(bytes.subarray(20)), ['{"op":"list","id":"é"}']);
    assert.deepEqual(s.push(Buffer.from('ents"}\n')), ['{"op":"events"}']);
    assert.equal(parseRequest('{"op":"list","id":"é"}').id, 'é');
  });

  it('refuses a line longer than the cap instead of buffering it', () => {
    const s = new LineSplitter();
    const chunk = Buffer.alloc(4096, 0x61);
    assert.throws(() => { for (let i = 0; i <= MAX_LINE / 4096; i++) s.push(chunk); }, /longer than 16384 bytes/);
    const ok = new LineSplitter();
    assert.deepEqual(ok.push(Buffer.concat([Buffer.alloc(MAX_LINE, 0x61), Buffer.from('\n')])).map((l) => l.length), [MAX_LINE]);
  });
});
