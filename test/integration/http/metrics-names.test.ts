import { spawnSync } from "node:child_process";
import fs from "node:fs";
import request from "supertest";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { startTestAppliance, type TestAppliance } from "../../helpers/appliance.js";
import { PROJECT_ROOT } from "../../helpers/daemon-process.js";
import { freePort } from "../../helpers/postgres.js";
import { lintExposition, parseExposition } from "../../helpers/promlint.js";

let app: TestAppliance;
let exposition = "";

beforeAll(async () => {
  // SIEM forwarding on (towards a port nobody listens on), so its metrics are scraped and linted too.
  app = await startTestAppliance({ env: { WARDKEEP_AUDIT_SIEM_ENABLED: "true", WARDKEEP_AUDIT_SIEM_HOST: "127.0.0.1", WARDKEEP_AUDIT_SIEM_PORT: String(await freePort()) } });
  await request(app.baseUrl).get("/healthz").ca(app.caPem);
  const res = await request(app.baseUrl).get("/metrics").ca(app.caPem);
  expect(res.status).toBe(200);
  exposition = res.text;
});
afterAll(async () => {
  await app?.close();
});

const promtool = spawnSync("promtool", ["--version"]).status === 0;

describe("Prometheus metric names", () => {
  it("scrapes every family the appliance registers, the SIEM lag among them", () => {
    const names = [...parseExposition(exposition).keys()];
    expect(names).toEqual(
      expect.arrayContaining([
        "wardkeep_http_requests_total",
        "wardkeep_audit_siem_lag_events",
        "wardkeep_audit_siem_lag_seconds",
        "wardkeep_audit_siem_lag_alert",
        "wardkeep_sealed",
      ]),
    );
    // prom-client's gauges named like counters are gone; their by-type gauges remain.
    expect(names).not.toContain("wardkeep_nodejs_active_handles_total");
    expect(names).toContain("wardkeep_nodejs_active_handles");
  });

  it("passes the promtool rules, the wardkeep_ prefix and base units with no finding", () => {
    expect(lintExposition(exposition, { prefix: "wardkeep_" })).toEqual([]);
  });

  // CI installs Debian's prometheus package (.ci/run); a workstation without it still runs the rules above.
  it.runIf(promtool || process.env.CI)("passes `promtool check metrics` with no finding", () => {
    const r = spawnSync("promtool", ["check", "metrics"], { input: exposition, encoding: "utf8" });
    expect(r.error).toBeUndefined();
    expect(`${r.stdout}${r.stderr}`.trim()).toBe("");
    expect(r.status).toBe(0);
  });

  it("documents every metric in docs/metrics.md with its type and labels", () => {
    const doc = fs.readFileSync(`${PROJECT_ROOT}/docs/metrics.md`, "utf8");
    const missing: string[] = [];
    for (const f of parseExposition(exposition).values()) {
      const row = doc.split("\n").find((l) => l.startsWith(`| \`${f.name}\` |`));
      const cells = row?.split("|").map((c) => c.trim());
      const labels = [...f.labels].filter((l) => l !== "le");
      if (!cells || cells[2] !== f.type || labels.some((l) => !cells[3]!.includes(`\`${l}\``))) missing.push(`${f.name} (${f.type}; ${labels.join(", ") || "no labels"})`);
    }
    expect(missing).toEqual([]);
  });
});
