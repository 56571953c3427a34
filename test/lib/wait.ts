import assert from 'node:assert/strict';

/** Polls `cond` until it holds, failing the test with `what` after `ms`. */
export async function eventually(what: string, cond: () => boolean, ms = 10000, everyMs = 100): Promise<void> {
  const deadline = Date.now() + ms;
  while (!cond()) {
    if (Date.now() > deadline) assert.fail(`timed out waiting for: ${what}`);
    await new Promise((r) => setTimeout(r, everyMs));
  }
}

/** Polls `cond` (sync or async) until it holds; throws with `what()` (read at the deadline) after `ms`. */
export async function until(cond: () => boolean | Promise<boolean>, ms: number, what: () => string, everyMs = 200): Promise<void> {
  const deadline = Date.now() + ms;
  while (!(await cond())) {
    if (Date.now() > deadline) throw new Error(`timed out after ${ms} ms: ${what()}`);
    await new Promise((r) => setTimeout(r, everyMs));
  }
}
