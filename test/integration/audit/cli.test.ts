import { spawnSync } from "node:child_process";
import fs from "node:fs";
import path from "node:path";
import pg from "pg";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { appendAuditEvent } from "../../../daemon/audit/append.js";
import { describeCheckpointKeys } from "../../../daemon/audit/signing-key.js";
import { inScope } from "../../../daemon/db/sql.js";
import { startTestAppliance, tempDir, testEnv, type TestAppliance } from "../../helpers/appliance.js";
import { runCli } from "../../helpers/daemon-process.js";

let app: TestAppliance;
let env: Record<string, string>;
let fingerprint: string;
const made: string[] = [];
const scratch = (prefix?: string) => {
  const d = tempDir(prefix);
  made.push(d);
  return d;
};

beforeAll(async () => {
  app = await startTestAppliance();
  env = testEnv(app.db, app.dataDir);
  for (let i = 0; i < 5; i++) {
    await inScope(app.ctx.db.app, { kind: "appliance" }, (t) =>
      appendAuditEvent(app.ctx, t, { tenantId: null, actor: { userId: "u-1", role: "super_admin" }, action: "tenant.read", resourceType: "tenant", outcome: "success" }),
    );
  }
});
afterAll(async () => {
  await app?.close();
  for (const d of made) fs.rmSync(d, { recursive: true, force: true });
});

describe("wardkeep audit", () => {
  it("verify reports an intact chain as JSON, fingerprint prints the console's fingerprint, and export refuses an unknown format with one line", async () => {
    // Processes at once: each CLI start costs seconds on a loaded 2-core machine.
    const [verify, bad, fp, fpText] = await Promise.all([
      runCli(["audit", "verify", "--json"], env),
      runCli(["audit", "export", "--from", "2025-01-01", "--to", "2025-02-01", "--format", "xml", "--out", scratch()], env),
      runCli(["audit", "fingerprint", "--json"], env),
      runCli(["audit", "fingerprint"], env),
    ]);
    // The same value the console's Audit page shows (GET /api/v1/audit/public-key).
    const shown = await describeCheckpointKeys(app.ctx);
    expect(fp.code).toBe(0);
    expect(JSON.parse(fp.stdout)).toMatchObject({ ok: true, algorithm: "Ed25519", keyId: shown.keyId, fingerprint: shown.fingerprint });
    expect(shown.fingerprint).toMatch(/^[0-9a-f]{64}$/);
    expect(fpText.stdout.split("\n")[0]).toBe(`${shown.fingerprint}  (Ed25519, key id ${shown.keyId}, signs evidence packs now)`);
    expect(fpText.stdout).toContain("an auditor checks a pack with: sh verify.sh --fingerprint <fingerprint> <pack dir>");
    fingerprint = JSON.parse(fp.stdout).fingerprint;
    expect(verify.code).toBe(0);
    const report = JSON.parse(verify.stdout);
    expect(report).toMatchObject({ ok: true, intact: true });
    expect(Number(report.lastGoodSeq)).toBeGreaterThanOrEqual(5);
    expect(bad.code).toBe(1);
    expect(bad.stderr.trim()).toBe("wardkeep: --format: unknown format xml (use csv, jsonl, fhir)");
  });

  it("export writes an evidence pack to a local directory that verifies offline", async () => {
    const out = scratch("wardkeep-cli-export-");
    const from = new Date(Date.now() - 86_400_000).toISOString();
    const to = new Date(Date.now() + 86_400_000).toISOString();
    const r = await runCli(["audit", "export", "--from", from, "--to", to, "--format", "csv,fhir", "--out-dir", out, "--json"], env);
    expect(r.stderr).toBe("");
    expect(r.code).toBe(0);
    const manifest = JSON.parse(r.stdout);
    expect(fs.existsSync(path.join(manifest.dir, "events.fhir.json"))).toBe(true);
    const check = spawnSync("sh", [path.join(manifest.dir, "verify.sh"), "--fingerprint", fingerprint, manifest.dir], { encoding: "utf8" });
    expect(check.stderr).toBe("");
    expect(check.stdout.trim()).toBe(`intact up to seq ${manifest.chainEnd.seq}, head ${manifest.chainEnd.hash}`);
    // The export recorded itself, as the host operator who ran it.
    const events = fs.readFileSync(path.join(manifest.dir, "events.jsonl"), "utf8");
    expect(events).toContain('"action":"audit.export"');
    expect(events).toContain('"actor_role":"host_operator"');
  });

  it("verify exits 1 naming the first broken seq after tampering", async () => {
    const su = new pg.Client({ connectionString: app.db.superuserUrl });
    await su.connect();
    try {
      await su.query("SET session_replication_role = replica");
      await su.query(`UPDATE audit_events SET canonical = replace(canonical, '"tenant.read"', '"tenant.list"') WHERE seq = 3`);
    } finally {
      await su.end();
    }
    const r = await runCli(["audit", "verify"], env);
    expect(r.code).toBe(1);
    expect(r.stderr).toMatch(/^wardkeep: audit chain broken at seq 3 \(changed\)/);
  });
});
