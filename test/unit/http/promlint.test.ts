import { describe, expect, it } from "vitest";
import { lintExposition } from "../../helpers/promlint.js";

const family = (name: string, type: string, help: string | null, sample = `${name} 1`) =>
  [help === null ? "" : `# HELP ${name} ${help}`, `# TYPE ${name} ${type}`, sample].filter(Boolean).join("\n");
const problemsOf = (text: string) => lintExposition(text, { prefix: "wardkeep_" }).map((p) => `${p.metric}: ${p.text}`);

describe("the metrics linter (promtool check metrics rules, plus the appliance's own)", () => {
  it("accepts well-named metrics of every type", () => {
    const text = [
      family("wardkeep_http_requests_total", "counter", "HTTP requests", 'wardkeep_http_requests_total{method="GET"} 3'),
      family("wardkeep_backup_last_snapshot_bytes", "gauge", "Stored size"),
      [
        "# HELP wardkeep_http_request_duration_seconds HTTP request duration",
        "# TYPE wardkeep_http_request_duration_seconds histogram",
        'wardkeep_http_request_duration_seconds_bucket{le="0.1"} 1',
        "wardkeep_http_request_duration_seconds_sum 0.05",
        "wardkeep_http_request_duration_seconds_count 1",
      ].join("\n"),
    ].join("\n");
    expect(problemsOf(text)).toEqual([]);
  });

  it("names each finding promtool reports, and the appliance's prefix and unit rules", () => {
    const text = [
      family("wardkeep_nodejs_active_handles_total", "gauge", "Total number of active handles."),
      family("wardkeep_jobs_run", "counter", "Jobs run"),
      family("wardkeep_restore_milliseconds", "gauge", "Restore time"),
      family("wardkeep_queue_count", "gauge", "Queue length"),
      family("wardkeep_lag_ms", "gauge", "Lag"),
      family("wardkeep_pool_gauge", "gauge", "Pool"),
      family("wardkeep_fooBar", "gauge", "Camel", 'wardkeep_fooBar{userName="x"} 1'),
      family("wardkeep_nohelp", "gauge", null),
      family("process_open_fds", "gauge", "Open fds"),
      family("wardkeep_drill_rto_seconds", "gauge", "Restore time in milliseconds"),
      family("wardkeep_a:b", "gauge", "Colon"),
    ].join("\n");
    expect(problemsOf(text)).toEqual([
      'process_open_fds: metric names should start with "wardkeep_"',
      "wardkeep_a:b: metric names should not contain ':'",
      'wardkeep_drill_rto_seconds: help text names "milliseconds" but the metric is in seconds',
      "wardkeep_fooBar: label names should be written in 'snake_case' not 'camelCase'",
      "wardkeep_fooBar: metric names should be written in 'snake_case' not 'camelCase'",
      'wardkeep_jobs_run: counter metrics should have "_total" suffix',
      "wardkeep_lag_ms: metric names should not contain abbreviated units",
      'wardkeep_nodejs_active_handles_total: non-counter metrics should not have "_total" suffix',
      "wardkeep_nohelp: no help text",
      "wardkeep_pool_gauge: metric name should not include type 'gauge'",
      'wardkeep_queue_count: non-histogram and non-summary metrics should not have "_count" suffix',
      'wardkeep_restore_milliseconds: use base unit "seconds" instead of "milliseconds"',
    ]);
  });
});
