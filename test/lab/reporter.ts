// Kernel lab: a node:test reporter that prints one line per finished test,
// `QNH-LAB {"name":...,"ok":...}`, on the lab's console, so the outer test run
// (test/e2e/kernel-lab.test.ts) reports the lab's tests one by one.
import type { TestEvent } from 'node:test/reporters';

interface Finished {
  name: string;
  nesting: number;
  file?: string;
  details: { duration_ms: number; type?: string; error?: Error & { cause?: unknown } };
  skip?: string | boolean;
  todo?: string | boolean;
}

function errorText(e: unknown): string {
  if (!e) return '';
  const err = e as { cause?: unknown; message?: string };
  const inner = err.cause instanceof Error ? err.cause : err;
  return (inner as Error).stack ?? (inner as Error).message ?? String(inner);
}

export default async function* labReporter(source: AsyncIterable<TestEvent>): AsyncGenerator<string> {
  for await (const ev of source) {
    if (ev.type === 'test:pass' || ev.type === 'test:fail') {
      const d = ev.data as unknown as Finished;
      const line = {
        name: d.name, nesting: d.nesting, file: d.file?.replace(/^.*\/dist\//, 'dist/'), suite: d.details.type === 'suite',
        ok: ev.type === 'test:pass', ms: Math.round(d.details.duration_ms), skip: d.skip ? String(d.skip) : undefined,
        error: ev.type === 'test:fail' ? errorText(d.details.error).slice(0, 4000) : undefined,
      };
      yield `QNH-LAB ${JSON.stringify(line)}\n`;
    } else if (ev.type === 'test:diagnostic') {
      yield `QNH-LAB-DIAG ${(ev.data as { message: string }).message}\n`;
    } else if (ev.type === 'test:stderr' || ev.type === 'test:stdout') {
      const m = (ev.data as { message?: string }).message;
      if (m) for (const l of m.split('\n')) if (l) yield `QNH-LAB-OUT ${l}\n`;
    }
  }
}
