import fs from "node:fs";
import path from "node:path";
import request from "supertest";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { knownMigrations } from "../../../daemon/db/migrate.js";
import { startTestAppliance, tempDir, testEnv } from "../../helpers/appliance.js";
import { runCli } from "../../helpers/daemon-process.js";
import { createTestDatabase, type TestDatabase } from "../../helpers/postgres.js";

let db: TestDatabase;
let dataDir: string;
let env: Record<string, string>;

beforeAll(async () => {
  db = await createTestDatabase();
  dataDir = tempDir();
  env = testEnv(db, dataDir);
});
afterAll(async () => {
  await db?.drop();
  fs.rmSync(dataDir, { recursive: true, force: true });
});

function expectOneLineFailure(result: { code: number | null; stderr: string }, pattern: RegExp) {
  expect(result.code).not.toBe(0);
  const lines = result.stderr.trim().split("\n");
  expect(lines).toHaveLength(1);
  expect(lines[0]).toMatch(pattern);
}

describe("wardkeep CLI", () => {
  it("lists its commands in --help and exits 0", async () => {
    const result = await runCli(["--help"]);
    expect(result.code).toBe(0);
    for (const command of ["start", "migrate", "doctor", "admin", "config"]) expect(result.stdout).toContain(command);
  });

  it("fails an unknown command with one line and a non-zero code", async () => {
    expectOneLineFailure(await runCli(["frobnicate"]), /unknown command 'frobnicate'/);
  });

  it("stops on a bad configuration value with one line naming key, value and what is allowed", async () => {
    expectOneLineFailure(
      await runCli(["start"], { ...env, WARDKEEP_PORT: "abc" }),
      /^wardkeep: config: server\.port = "abc" \(environment WARDKEEP_PORT\) is invalid: expected a number$/,
    );
  });

  it("reports failures as one JSON object with --json", async () => {
    const result = await runCli(["--json", "migrate"], { ...env, WARDKEEP_TLS_MIN_VERSION: "SSLv3" });
    expect(result.code).toBe(1);
    expect(JSON.parse(result.stdout)).toEqual({ ok: false, error: expect.stringContaining("tls.minVersion") });
  });

  it("migrates, then finds nothing to do", async () => {
    const first = await runCli(["--json", "migrate"], env);
    expect(first.code).toBe(0);
    expect(JSON.parse(first.stdout)).toEqual({ ok: true, applied: knownMigrations() });
    const again = await runCli(["migrate"], env);
    expect(again.stdout.trim()).toBe("schema is current; nothing to apply");
  });

  it("creates the first super-admin from a password file, once", async () => {
    const passwordFile = path.join(dataDir, "admin-password");
    fs.writeFileSync(passwordFile, "a long enough passphrase\n", { mode: 0o600 });
    const created = await runCli(["--json", "admin", "create", "--email", "IT.Admin@hospital.example", "--password-file", passwordFile], env);
    expect(created.code).toBe(0);
    expect(JSON.parse(created.stdout)).toMatchObject({ ok: true, email: "it.admin@hospital.example", id: expect.any(String) });
    expectOneLineFailure(await runCli(["admin", "create", "--email", "second@hospital.example", "--password-file", passwordFile], env), /a super-admin already exists/);
  });

  it("explains a bad email, a short password and a missing password file in one line each", async () => {
    const short = path.join(dataDir, "short");
    fs.writeFileSync(short, "tiny\n");
    expectOneLineFailure(await runCli(["admin", "create", "--email", "not-an-email", "--password-file", short], env), /--email: /);
    expectOneLineFailure(await runCli(["admin", "create", "--email", "a@b.example", "--password-file", "/nonexistent"], env), /cannot read password file \/nonexistent \(ENOENT\)/);
    expectOneLineFailure(await runCli(["admin", "create", "--email", "a@b.example"], env), /required option '--password-file/);
  });

  it("doctor reports each check and how to fix what is wrong", async () => {
    const healthy = await runCli(["--json", "doctor"], env);
    expect(healthy.code).toBe(0);
    const report = JSON.parse(healthy.stdout) as { ok: boolean; findings: { check: string; status: string }[] };
    const byCheck = Object.fromEntries(report.findings.map((f) => [f.check, f.status]));
    expect(byCheck).toMatchObject({ config: "ok", database: "ok", "database-roles": "ok", migrations: "ok", clock: "ok", disk: "ok" });
    expect(byCheck.tls).toBe("warn"); // no certificate until the first start

    const broken = await runCli(["doctor"], { ...env, WARDKEEP_DATABASE_URL: db.ownerUrl.replace(/:[^:@/]+@/, ":wrong-password@") });
    expect(broken.code).toBe(1);
    expect(broken.stdout).toMatch(/^FAIL database: .*— check database\.url/m);
    expect(broken.stdout).not.toContain("wrong-password");
    expect(broken.stderr.trim()).toMatch(/^wardkeep: 1 problem\(s\) found: database$/);
  });
});

describe("readiness and migrations", () => {
  it("is not ready while migrations are pending, and ready after `wardkeep migrate`", async () => {
    const fresh = await createTestDatabase();
    const app = await startTestAppliance({ db: fresh, env: { WARDKEEP_DATABASE_MIGRATE_ON_START: "false" } });
    try {
      const before = await request(app.baseUrl).get("/readyz").ca(app.caPem);
      expect(before.status).toBe(503);
      expect(before.headers["content-type"]).toMatch(/problem\+json/);
      expect(before.body.checks.migrations).toMatchObject({ ok: false, pending: knownMigrations() });
      expect(before.body.checks.database.ok).toBe(true);

      const migrated = await runCli(["migrate"], testEnv(fresh, app.dataDir));
      expect(migrated.code).toBe(0);

      const after = await request(app.baseUrl).get("/readyz").ca(app.caPem);
      expect(after.status).toBe(200);
      expect(after.body.status).toBe("ready");
    } finally {
      await app.close();
      await fresh.drop();
    }
  });
});
