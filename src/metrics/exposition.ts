// Prometheus text exposition format 0.0.4, pure: metric families (name, HELP,
// TYPE, labelled samples) -> the text a scraper reads from GET /metrics.
// Unit-tested on fixtures (escaping, ordering, number formats).

export type MetricType = 'counter' | 'gauge';
export interface Sample { labels?: Record<string, string>; value: number }
export interface Family { name: string; help: string; type: MetricType; samples: Sample[] }

const NAME = /^[a-zA-Z_:][a-zA-Z0-9_:]*$/;
const LABEL = /^[a-zA-Z_][a-zA-Z0-9_]*$/;

/** The format's escapes: a label value escapes \, " and newline; HELP escapes \ and newline. */
const labelValue = (v: string): string => v.replace(/\\/g, '\\\\').replace(/"/g, '\\"').replace(/\n/g, '\\n');
const helpText = (v: string): string => v.replace(/\\/g, '\\\\').replace(/\n/g, '\\n');

function num(v: number): string {
  if (Number.isNaN(v)) return 'NaN';
  if (v === Infinity) return '+Inf';
  if (v === -Infinity) return '-Inf';
  return String(v);
}

export function render(families: Family[]): string {
  let out = '';
  for (const f of families) {
    if (!NAME.test(f.name)) throw new Error(`bad metric name ${f.name}`);
    out += `# HELP ${f.name} ${helpText(f.help)}\n# TYPE ${f.name} ${f.type}\n`;
    for (const s of f.samples) {
      const labels = Object.entries(s.labels ?? {});
      for (const [k] of labels) if (!LABEL.test(k) || k.startsWith('__')) throw new Error(`bad label name ${k}`);
      const l = labels.length ? `{${labels.map(([k, v]) => `${k}="${labelValue(v)}"`).join(',')}}` : '';
      out += `${f.name}${l} ${num(s.value)}\n`;
    }
  }
  return out;
}

/** Parses what render() writes back to samples by name (for tests and checks): `name{labels}` -> value. */
export function parseExposition(text: string): Map<string, number> {
  const m = new Map<string, number>();
  for (const line of text.split('\n')) {
    if (line === '' || line.startsWith('#')) continue;
    const i = line.lastIndexOf(' ');
    const v = line.slice(i + 1);
    m.set(line.slice(0, i), v === '+Inf' ? Infinity : v === '-Inf' ? -Infinity : Number(v));
  }
  return m;
}
