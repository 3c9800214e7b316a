/**
 * A linter for the Prometheus text exposition format: the rules of `promtool check metrics`
 * (Prometheus util/promlint, restated here so the suite needs no Go binary) plus the appliance's
 * own: the `wardkeep_` prefix, and help texts that do not name a unit other than the one in the
 * name. test/integration/http/metrics-names.test.ts also runs the real promtool where installed.
 */
export type MetricFamily = { name: string; type: string; help: string | undefined; labels: Set<string>; samples: string[] };
export type LintProblem = { metric: string; text: string };

/** Families of a text exposition, keyed by name, in order of appearance. */
export function parseExposition(text: string): Map<string, MetricFamily> {
  const families = new Map<string, MetricFamily>();
  const family = (name: string) => {
    let f = families.get(name);
    if (!f) {
      f = { name, type: "untyped", help: undefined, labels: new Set(), samples: [] };
      families.set(name, f);
    }
    return f;
  };
  for (const line of text.split("\n")) {
    if (line.trim() === "") continue;
    const meta = /^# (HELP|TYPE) ([a-zA-Z_:][a-zA-Z0-9_:]*) ?(.*)$/.exec(line);
    if (meta) {
      const f = family(meta[2]!);
      if (meta[1] === "HELP") f.help = meta[3]!;
      else f.type = meta[3]!;
      continue;
    }
    if (line.startsWith("#")) continue;
    const sample = /^([a-zA-Z_:][a-zA-Z0-9_:]*)(\{([^}]*)\})?\s/.exec(line);
    if (!sample) throw new Error(`not a sample line: ${line.slice(0, 80)}`);
    const sampleName = sample[1]!;
    // Histogram and summary samples carry suffixes; they belong to the family without them.
    const base = [...families.keys()].reverse().find((n) => sampleName === n || ["_bucket", "_sum", "_count"].some((s) => sampleName === n + s)) ?? sampleName;
    const f = family(base);
    f.samples.push(line);
    for (const m of (sample[3] ?? "").matchAll(/([a-zA-Z_][a-zA-Z0-9_]*)="/g)) f.labels.add(m[1]!);
  }
  return families;
}

// Base units and the non-base units Prometheus asks to convert (promlint's table).
const BASE_UNITS = ["amperes", "bytes", "candela", "grams", "celsius", "kelvin", "kelvins", "meters", "metres", "moles", "seconds", "joules"];
const NON_BASE: Record<string, string> = {
  minutes: "seconds",
  hours: "seconds",
  days: "seconds",
  fahrenheit: "celsius",
  rankine: "kelvin",
  inches: "meters",
  yards: "meters",
  miles: "meters",
  bits: "bytes",
  calories: "joules",
  pounds: "grams",
  ounces: "grams",
};
const PREFIXES = ["pico", "nano", "micro", "milli", "centi", "deci", "deca", "hecto", "kilo", "kibi", "mega", "mibi", "giga", "gibi", "tera", "tebi", "peta", "pebi"];
const ABBREVIATIONS = ["s", "ms", "us", "ns", "sec", "b", "kb", "mb", "gb", "tb", "pb", "m", "h", "d"];
// The exposition types (client_model MetricType); `_info` is the convention for info metrics, not a type.
const TYPES_IN_NAME = ["counter", "gauge", "summary", "histogram", "gauge_histogram"];
// Units a help text may name that contradict a base-unit metric name (our own rule).
const HELP_UNITS = /\b(milliseconds?|microseconds?|nanoseconds?|minutes?|hours?|days?|ms|kib|mib|gib|kilobytes?|megabytes?|gigabytes?|kb|mb|gb)\b/i;

/** What the metric's name says its unit is, and the base unit it should be in. */
function unitOf(name: string): { unit: string; base: string } | undefined {
  const parts = name.split("_");
  const table: [string, string][] = [...BASE_UNITS.map((u): [string, string] => [u, u]), ...Object.entries(NON_BASE)];
  for (const [unit, base] of table) {
    for (const p of [...PREFIXES, ""]) if (parts.includes(p + unit)) return { unit: p + unit, base };
  }
  return undefined;
}

function lintFamily(f: MetricFamily, opts: { prefix?: string }): string[] {
  const out: string[] = [];
  const n = f.name;
  const lower = n.toLowerCase();
  const has = (piece: string) => lower.includes(`_${piece}_`) || lower.endsWith(`_${piece}`);
  if (f.help === undefined) out.push("no help text");
  const unit = unitOf(n);
  if (unit && unit.unit !== unit.base) out.push(`use base unit "${unit.base}" instead of "${unit.unit}"`);
  const counter = f.type === "counter";
  const untyped = f.type === "untyped";
  if (counter && !n.endsWith("_total")) out.push('counter metrics should have "_total" suffix');
  if (!counter && !untyped && n.endsWith("_total")) out.push('non-counter metrics should not have "_total" suffix');
  if (!untyped) {
    const histogram = f.type === "histogram";
    const summary = f.type === "summary";
    if (!histogram && n.endsWith("_bucket")) out.push('non-histogram metrics should not have "_bucket" suffix');
    if (!histogram && !summary && n.endsWith("_count")) out.push('non-histogram and non-summary metrics should not have "_count" suffix');
    if (!histogram && !summary && n.endsWith("_sum")) out.push('non-histogram and non-summary metrics should not have "_sum" suffix');
    if (!histogram && f.labels.has("le")) out.push('non-histogram metrics should not have "le" label');
    if (!summary && f.labels.has("quantile")) out.push('non-summary metrics should not have "quantile" label');
  }
  for (const t of TYPES_IN_NAME) if (has(t)) out.push(`metric name should not include type '${t}'`);
  if (n.includes(":")) out.push("metric names should not contain ':'");
  if (/[a-z][A-Z]/.test(n)) out.push("metric names should be written in 'snake_case' not 'camelCase'");
  if ([...f.labels].some((l) => /[a-z][A-Z]/.test(l))) out.push("label names should be written in 'snake_case' not 'camelCase'");
  if (ABBREVIATIONS.some(has)) out.push("metric names should not contain abbreviated units");
  // The appliance's own rules.
  if (opts.prefix && !n.startsWith(opts.prefix)) out.push(`metric names should start with "${opts.prefix}"`);
  const helpUnit = f.help ? HELP_UNITS.exec(f.help) : null;
  if (unit && helpUnit) out.push(`help text names "${helpUnit[1]}" but the metric is in ${unit.unit}`);
  return out;
}

/** Every problem in an exposition, sorted by metric name then text (as promtool prints them). */
export function lintExposition(text: string, opts: { prefix?: string } = {}): LintProblem[] {
  const problems: LintProblem[] = [];
  for (const f of parseExposition(text).values()) for (const t of lintFamily(f, opts)) problems.push({ metric: f.name, text: t });
  return problems.sort((a, b) => (a.metric === b.metric ? a.text.localeCompare(b.text) : a.metric.localeCompare(b.metric)));
}
