/**
 * The bytes a manifest's MAC and signature cover: JSON with object keys sorted by UTF-16 code
 * unit, no whitespace, strings and integers as JSON.stringify writes them — the subset of RFC
 * 8785 (JCS) that a manifest needs, since it holds no floating-point numbers (counters above
 * 2^53 are written as strings). backup/recover-standalone.mjs carries the same 10 lines.
 */
export function canonicalJson(value: unknown): string {
  if (value === null || typeof value !== "object") {
    if (typeof value === "number" && !Number.isSafeInteger(value)) throw new TypeError("manifest numbers must be safe integers");
    if (value === undefined) throw new TypeError("undefined has no JSON form");
    return JSON.stringify(value);
  }
  if (Array.isArray(value)) return "[" + value.map(canonicalJson).join(",") + "]";
  const entries = Object.entries(value as Record<string, unknown>)
    .filter(([, v]) => v !== undefined)
    .sort(([a], [b]) => (a < b ? -1 : a > b ? 1 : 0));
  return "{" + entries.map(([k, v]) => JSON.stringify(k) + ":" + canonicalJson(v)).join(",") + "}";
}
