// src/log.ts: levels filter lines; journald priority prefixes only when
// stderr is the stream JOURNAL_STREAM names (device and inode compared).
import assert from 'node:assert/strict';
import { closeSync, fstatSync, mkdtempSync, openSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { describe, it } from 'node:test';
import { createLogger, isJournalStream } from '../../src/log.js';

describe('log', () => {
  it('levels: lines under the chosen level are dropped', () => {
    const out: string[] = [];
    const l = createLogger({ level: 'warn', journal: false, write: (s) => out.push(s) });
    l.error('e'); l.warn('w'); l.info('i'); l.debug('d');
    assert.deepEqual(out, ['e\n', 'w\n']);
    assert.equal(l.enabled('info'), false);
    const all: string[] = [];
    const d = createLogger({ level: 'debug', journal: true, write: (s) => all.push(s) });
    d.error('e'); d.warn('w'); d.info('i'); d.debug('d');
    assert.deepEqual(all, ['<3>e\n', '<4>w\n', '<6>i\n', '<7>d\n']);
  });

  it('the journal is recognised by JOURNAL_STREAM naming the very fd, not by the variable alone', () => {
    const dir = mkdtempSync(join(tmpdir(), 'qnh-log-'));
    const fd = openSync(join(dir, 'f'), 'w');
    try {
      const st = fstatSync(fd);
      assert.equal(isJournalStream({ JOURNAL_STREAM: `${st.dev}:${st.ino}` }, fd), true);
      assert.equal(isJournalStream({ JOURNAL_STREAM: `${st.dev}:${st.ino + 1}` }, fd), false, 'inherited from a parent whose stderr was the journal');
      assert.equal(isJournalStream({}, fd), false);
      assert.equal(isJournalStream({ JOURNAL_STREAM: 'garbage' }, fd), false);
    } finally {
      closeSync(fd);
      rmSync(dir, { recursive: true, force: true });
    }
  });
});
