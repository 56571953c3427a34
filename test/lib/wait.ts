import assert from 'node:assert/strict';

/** Polls `cond` until it holds, failing the test with `what` after `ms`. */
export async function eventually(what: string, cond: () => boolean, ms = 10000, everyMs = 100): Promise<void> {
  const deadline = Date.now() + ms;
  while (!cond()) {
    if (Date.now() > deadline) assert.fail(`timed out waiting for: ${what}`);
    await new Promise((r) => setTimeout(r, everyMs));
  }
}
