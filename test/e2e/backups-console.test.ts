import fs from "node:fs";
import path from "node:path";
import pg from "pg";
import type { Browser, Page } from "playwright-core";
import { afterAll, beforeAll, describe, expect, inject, it } from "vitest";
import { createTenant, signIn, totpCode, type SignedIn } from "../helpers/actors.js";
import { startTestAppliance, tempDir, testEnv, type TestAppliance } from "../helpers/appliance.js";
import { ensureAdminUiBuilt, launchBrowser, openScreen } from "../helpers/browser.js";
import { TestClock } from "../helpers/clock.js";
import { runCli } from "../helpers/daemon-process.js";
import { auditEvents } from "../integration/auth/identity-helpers.js";
import { startS3, startSshd, type S3Server, type Sshd } from "../integration/backup/servers.js";

/**
 * The backup jobs of the console and of `wardkeep backup target …`, against one real appliance,
 * a real S3 server (s3rver) and a real OpenSSH server: testing a target before saving it (a wrong
 * bucket or key is one line on the screen and on stderr), verifying a snapshot, restoring it into
 * a scratch database after a typed confirmation and a fresh second factor, and downloading the
 * recovery script. Each check reads what the screen or the command shows.
 */
let app: TestAppliance;
let browser: Browser;
let clock: TestClock;
let root: SignedIn;
let s3: S3Server;
let sshd: Sshd;
let env: Record<string, string>;
let nas: string;
const SLOW = 150_000;

beforeAll(async () => {
  await ensureAdminUiBuilt();
  clock = new TestClock();
  [app, browser, s3, sshd] = await Promise.all([
    startTestAppliance({ clock, env: { WARDKEEP_BACKUP_SCHEDULER_ENABLED: "false", WARDKEEP_BACKUP_DRILL_ADMIN_URL: inject("pgCluster").superuserUrl } }),
    launchBrowser(),
    startS3(),
    startSshd(),
  ]);
  env = testEnv(app.db, app.dataDir, { WARDKEEP_BACKUP_DRILL_ADMIN_URL: inject("pgCluster").superuserUrl });
  root = await signIn(app, { role: "super_admin", displayName: "Rhea Root" });
  const tenant = await createTenant(app, "Harbourside Hospital");
  const desk = await signIn(app, { role: "front_desk", tenantId: tenant.id, mfa: false });
  for (const name of ["Ada Quell", "Bram Oduya", "Cleo Marsh"]) await desk.agent.post("/api/v1/patients").send({ name }).expect(201);
  nas = tempDir("wardkeep-e2e-nas-");
}, SLOW);
afterAll(async () => {
  await browser?.close();
  await Promise.allSettled([app?.close(), s3?.stop(), sshd?.stop()]);
});

async function superuser<T extends pg.QueryResultRow>(text: string, database?: string): Promise<T[]> {
  const url = new URL(app.db.superuserUrl);
  if (database) url.pathname = `/${database}`;
  const client = new pg.Client({ connectionString: url.toString() });
  await client.connect();
  try {
    return (await client.query<T>(text)).rows;
  } finally {
    await client.end();
  }
}

/** Fills the last target row of the policy form. */
async function fillTarget(page: Page, fields: Record<string, string>, kind: "fs" | "sftp" | "s3") {
  const row = page.getByTestId("backup-target").last();
  await row.getByLabel("Kind").selectOption(kind);
  for (const [label, value] of Object.entries(fields)) await row.getByLabel(label, { exact: true }).fill(value);
  return row;
}

async function testLine(row: ReturnType<Page["getByTestId"]>): Promise<string> {
  await row.getByRole("button", { name: "Test connection" }).click();
  const line = row.getByTestId("target-test");
  await line.waitFor({ timeout: 30_000 });
  return (await line.textContent())!.replace(/\s+/g, " ").trim();
}

describe("testing a target's connection before saving it", () => {
  it(
    "shows one clear line for a wrong bucket, a wrong SFTP key and a good S3 target, and saves nothing while testing",
    async () => {
      const { context, page, violations } = await openScreen(browser, app.baseUrl, root.cookie, "/backups");
      await page.getByRole("button", { name: "Add target" }).click();
      const row = await fillTarget(
        page,
        { Name: "offsite", Bucket: "no-such-bucket", "Endpoint (unset: AWS)": s3.endpoint, "Access key id": "S3RVER", "Secret access key": "S3RVER" },
        "s3",
      );
      await row.getByLabel("Path-style addressing (MinIO, Ceph)").check();
      expect(await testLine(row)).toMatch(/^Connection failed: list failed: list snapshots\/ failed: NoSuchBucket$/);

      await row.getByLabel("Bucket").fill(s3.bucket);
      expect(await testLine(row)).toBe(`Connection OK: connected to s3://${s3.bucket}/ at ${s3.endpoint}: listed, wrote, read back and deleted a probe object`);

      await page.getByRole("button", { name: "Add target" }).click();
      const sftp = await fillTarget(
        page,
        {
          Name: "vault",
          Host: "127.0.0.1",
          Port: String(sshd.port),
          Username: "root",
          "Directory on the server": sshd.root,
          "Host key fingerprint": sshd.hostKeySha256,
          Password: "not-the-password",
        },
        "sftp",
      );
      const refused = await testLine(sftp);
      expect(refused).toBe(`Connection failed: list failed: cannot connect to 127.0.0.1:${sshd.port} (authentication failed: the server accepted none of the given credentials)`);
      expect(refused).not.toContain("not-the-password");

      // Nothing was saved by testing: the policy still has no target, and the probe is gone from the bucket.
      expect((await root.agent.get("/api/v1/backups/policy")).body.targets).toEqual([]);
      expect(fs.readdirSync(path.join(s3.dir, s3.bucket)).filter((f) => f.includes("connection-tests"))).toEqual([]);
      expect(violations).toEqual([]);
      await context.close();
    },
    SLOW,
  );

  it(
    "answers with the failing step through the API, and records each test in the audit trail",
    async () => {
      // A directory below a regular file: the first step fails (ENOTDIR) and the test stops there.
      const file = path.join(tempDir("wardkeep-e2e-notdir-"), "plain-file");
      fs.writeFileSync(file, "x");
      const res = await root.agent
        .post("/api/v1/backups/targets/test")
        .send({ target: { kind: "fs", name: "nas", path: path.join(file, "snapshots-here") } })
        .expect(200);
      expect(res.body).toMatchObject({ target: "nas", ok: false });
      expect(res.body.steps.map((s: { name: string; ok: boolean }) => `${s.name}:${s.ok}`)).toEqual(["list:false"]);
      expect(res.body.detail).toBe("list failed: list snapshots/ failed: ENOTDIR");
      const bad = await root.agent.post("/api/v1/backups/targets/test").send({ target: { kind: "fs", name: "Bad Name", path: "/x" } });
      expect(bad.status).toBe(400);
      const rows = await auditEvents(app, { action: "backup.target.test" });
      expect(rows.map((r) => `${r.resource_id}:${r.outcome}`)).toEqual(["offsite:failure", "offsite:success", "vault:failure", "nas:failure"]);
    },
    SLOW,
  );
});

describe("wardkeep backup target add|test|list", () => {
  it(
    "refuses to save an unreachable target (exit 3, one line), saves a tested one, lists it and tests it by name",
    async () => {
      const bad = path.join(nas, "..", "bad-target.json");
      fs.writeFileSync(
        bad,
        JSON.stringify({
          kind: "s3",
          name: "offsite",
          bucket: "no-such-bucket",
          endpoint: s3.endpoint,
          forcePathStyle: true,
          accessKeyId: "S3RVER",
          secrets: { secretAccessKey: "S3RVER" },
        }),
      );
      const good = path.join(nas, "..", "nas-target.json");
      fs.writeFileSync(good, JSON.stringify({ kind: "fs", name: "nas", path: nas }));
      const [refused, refusedJson] = await Promise.all([
        runCli(["backup", "target", "add", "--target-file", bad], env),
        runCli(["--json", "backup", "target", "add", "--target-file", bad], env),
      ]);
      expect(refused.code).toBe(3);
      expect(refused.stderr).toBe("wardkeep: target offsite not saved: list failed: list snapshots/ failed: NoSuchBucket\n");
      expect(refused.stdout.split("\n")[0]).toBe(`target offsite (s3://no-such-bucket/ at ${s3.endpoint}): FAILED: list failed: list snapshots/ failed: NoSuchBucket`);
      expect(refusedJson.code).toBe(3);
      expect(JSON.parse(refusedJson.stdout)).toEqual({ ok: false, error: "target offsite not saved: list failed: list snapshots/ failed: NoSuchBucket" });

      const added = await runCli(["--json", "backup", "target", "add", "--target-file", good], env);
      expect(added.stderr).toBe("");
      expect(added.code).toBe(0);
      const body = JSON.parse(added.stdout) as {
        ok: boolean;
        target: { name: string; path: string };
        test: { ok: boolean; steps: { name: string; ok: boolean }[] };
        replaced: boolean;
      };
      expect(body).toMatchObject({ ok: true, target: { name: "nas", path: nas }, test: { ok: true }, replaced: false });
      expect(body.test.steps.map((s) => `${s.name}:${s.ok}`)).toEqual(["list:true", "write:true", "read:true", "delete:true"]);

      const [list, test, missing] = await Promise.all([
        runCli(["backup", "target", "list"], env),
        runCli(["backup", "target", "test", "nas"], env),
        runCli(["backup", "target", "test", "nowhere"], env),
      ]);
      expect(list.stdout).toBe(`nas              fs   fs:${nas}\n`);
      expect(test.code).toBe(0);
      expect(test.stdout.split("\n")[0]).toBe(`target nas (fs:${nas}): OK: connected to fs:${nas}: listed, wrote, read back and deleted a probe object`);
      expect(missing.code).toBe(1);
      expect(missing.stderr).toBe("wardkeep: no target named nowhere in the backup policy (wardkeep backup target list)\n");
      // The API sees what the CLI saved.
      expect((await root.agent.get("/api/v1/backups/policy")).body.targets.map((t: { name: string }) => t.name)).toEqual(["nas"]);
    },
    SLOW,
  );
});

describe("verify, restore and the recovery script in the console", () => {
  let snapshotId: string;

  it(
    "verifies a snapshot from its row and shows what was checked",
    async () => {
      // The target the CLI test saved (set again here so this test also runs alone).
      await root.agent
        .put("/api/v1/backups/policy")
        .send({ targets: [{ kind: "fs", name: "nas", path: nas }] })
        .expect(200);
      const started = await root.agent.post("/api/v1/backups").send({}).expect(202);
      snapshotId = started.body.id;
      for (let i = 0; i < 150; i++) {
        if ((await root.agent.get(`/api/v1/backups/${snapshotId}`)).body.status !== "running") break;
        await new Promise((r) => setTimeout(r, 200));
      }
      const { context, page } = await openScreen(browser, app.baseUrl, root.cookie, "/backups");
      const row = page.getByTestId("snapshots").locator("tr", { hasText: snapshotId });
      await row.getByRole("button", { name: "Verify" }).click();
      const result = row.getByTestId("verify-result");
      await result.waitFor({ timeout: 30_000 });
      const stored = await superuser<{ rows: string }>(`SELECT rows::text FROM backup_snapshots WHERE id = '${snapshotId}'`);
      expect((await result.textContent())!.trim()).toMatch(
        new RegExp(`^Verified on nas: \\d+ objects, ${Number(stored[0]!.rows).toLocaleString("en-US")} rows, every digest and tag valid$`),
      );
      await context.close();
    },
    SLOW,
  );

  it(
    "restores into a scratch database only after the id is typed and a fresh code is given, and the patients are in it",
    async () => {
      const { context, page, violations } = await openScreen(browser, app.baseUrl, root.cookie, "/backups");
      const row = page.getByTestId("snapshots").locator("tr", { hasText: snapshotId });
      await row.getByRole("button", { name: "Restore…" }).click();
      const dialog = page.getByTestId("restore-dialog");
      const restore = dialog.getByRole("button", { name: "Restore" });
      expect(await restore.isDisabled()).toBe(true);
      await dialog.getByLabel("Type the snapshot id to confirm").fill(snapshotId.slice(0, -1));
      expect(await restore.isDisabled()).toBe(true);
      await dialog.getByLabel("Type the snapshot id to confirm").fill(snapshotId);
      // Make the second factor stale so the restore asks for a fresh code.
      clock.advanceMinutes(app.config.auth.stepUpMaxAgeMinutes + 1);
      await restore.click();
      const stepUp = page.getByTestId("step-up");
      await stepUp.getByLabel("Authentication code").waitFor();
      expect(await dialog.isVisible()).toBe(false);
      await stepUp.getByLabel("Authentication code").fill(totpCode(root.totpSecret!, clock.now()));
      await stepUp.getByRole("button", { name: "Confirm and continue" }).click();

      const notice = page.getByRole("status").filter({ hasText: `Snapshot ${snapshotId} restored` });
      await notice.waitFor({ timeout: 60_000 });
      const text = (await notice.textContent())!.replace(/\s+/g, " ").trim();
      const m = /^Snapshot \S+ restored into the scratch database (wardkeep_restore_[0-9a-f]{10}): \d+ tables, [\d,]+ rows from nas; audit chain intact up to event \d+\.$/.exec(
        text,
      );
      expect(m, text).not.toBeNull();
      try {
        const patients = await superuser<{ n: number }>("SELECT count(*)::int AS n FROM patients", m![1]);
        expect(patients[0]!.n).toBe(3);
      } finally {
        await superuser(`DROP DATABASE IF EXISTS ${m![1]} WITH (FORCE)`);
      }
      const audited = (await auditEvents(app, { action: "backup.restore" })).filter((e) => e.resource_id === snapshotId);
      expect(audited.map((r) => r.outcome)).toEqual(["success"]);
      expect(violations).toEqual([]);
      await context.close();
    },
    SLOW,
  );

  it(
    "refuses a restore into a database that is not empty with the server's reason in the dialog",
    async () => {
      const { context, page } = await openScreen(browser, app.baseUrl, root.cookie, "/backups");
      await page.getByTestId("snapshots").locator("tr", { hasText: snapshotId }).getByRole("button", { name: "Restore…" }).click();
      const dialog = page.getByTestId("restore-dialog");
      await dialog.getByLabel("Another empty database").check();
      await dialog.getByLabel("Owner connection URL of an empty database").fill(app.db.ownerUrl);
      await dialog.getByLabel("Type the snapshot id to confirm").fill(snapshotId);
      await root.stepUp();
      await dialog.getByRole("button", { name: "Restore" }).click();
      const alert = dialog.getByRole("alert");
      await alert.waitFor({ timeout: 30_000 });
      const text = (await alert.textContent())!;
      expect(text).toMatch(/not empty/);
      expect(text).not.toContain(new URL(app.db.ownerUrl).password);
      await context.close();
    },
    SLOW,
  );

  it("downloads the standalone recovery script from the page", async () => {
    const { context, page } = await openScreen(browser, app.baseUrl, root.cookie, "/backups");
    const [download] = await Promise.all([page.waitForEvent("download"), page.getByRole("link", { name: "Download recovery script" }).click()]);
    expect(download.suggestedFilename()).toBe("wardkeep-recover-standalone.mjs");
    const file = await download.path();
    expect(fs.readFileSync(file, "utf8")).toBe(fs.readFileSync(path.resolve("backup/recover-standalone.mjs"), "utf8"));
    await context.close();
  });
});

describe("trends per target and the point-in-time recovery panel", () => {
  it(
    "draws each target's snapshot size, duration, drill RTO and achieved RPO from the API's numbers, and the age of the newest archived WAL",
    async () => {
      const hour = 3_600_000;
      const at = (h: number) => new Date(clock.now().getTime() - h * hour).toISOString();
      const runs = [
        { id: "20261201T010000Z-0000000a", at: at(3), bytes: 1_048_576, ms: 1500 },
        { id: "20261201T020000Z-0000000b", at: at(2), bytes: 4_194_304, ms: 3000 },
        { id: "20261201T030000Z-0000000c", at: at(1), bytes: 2_097_152, ms: 2000 },
      ];
      for (const r of runs) {
        await superuser(
          `INSERT INTO backup_snapshots (id, trigger, status, started_at, finished_at, duration_ms, targets)
           VALUES ('${r.id}', 'schedule', 'complete', '${r.at}', '${r.at}', ${r.ms}, '[{"target":"archive","ok":true,"bytes":${r.bytes}}]')`,
        );
      }
      await superuser(
        `INSERT INTO backup_drills (trigger, status, started_at, finished_at, target, rto_ms, rpo_ms) VALUES
           ('schedule', 'passed', '${at(2)}', '${at(2)}', 'archive', 8000, 300000),
           ('schedule', 'passed', '${at(1)}', '${at(1)}', 'archive', 6000, 180000)`,
      );
      const archivedAt = new Date(clock.now().getTime() - 42_000).toISOString();
      await superuser(
        `INSERT INTO pitr_wal (name, target, archived_at, shipped_at, stored_bytes) VALUES ('000000010000000000000007', 'nas', '${archivedAt}', '${archivedAt}', 16777216)`,
      );
      const [archiver] = await superuser<{ a: string; f: string }>("SELECT archived_count::text AS a, failed_count::text AS f FROM pg_stat_archiver");
      // Two PITR drills of target nas: one passed 1.2 s short of its time in 7.5 s, the newer one failed on a missing segment.
      const checks = JSON.stringify([
        { name: "audit chain verifies", ok: true, detail: "events 1..40" },
        { name: "matches the signed checkpoint before the time", ok: true, detail: "checkpoint 2 at seq 30" },
        { name: "encrypted columns decrypt", ok: true, detail: "6 values" },
      ]);
      await superuser(
        `INSERT INTO pitr_drills (status, trigger, target, started_at, finished_at, base_backup, target_time, achieved_time, rto_ms, phases, checks, error) VALUES
           ('passed', 'schedule', 'nas', '${at(3)}', '${at(3)}', 'bb-20261201T0100Z', '${at(4)}', '${new Date(Date.parse(at(4)) - 1200).toISOString()}', 7500,
            '{"locateMs":100,"baseMs":2000,"replayMs":5000,"verifyMs":400}', '${checks}', NULL),
           ('failed', 'manual', 'nas', '${at(1)}', '${at(1)}', 'bb-20261201T0100Z', '${at(2)}', NULL, NULL, '{}', '[]',
            'WAL segment 000000010000000000000005 is missing from target nas: later segments exist')`,
      );

      const { context, page, violations } = await openScreen(browser, app.baseUrl, root.cookie, "/backups");
      const trends = page.getByTestId("trends-archive");
      await trends.waitFor();
      const chart = (title: string) => trends.locator(`[data-testid=trend-chart][data-title="${title}"]`);
      const read = async (title: string) => ({
        max: await chart(title).getByTestId("y-max").textContent(),
        min: await chart(title).getByTestId("y-min").textContent(),
        latest: (await chart(title).getByTestId("trend-latest").textContent())!.trim(),
        points: await chart(title)
          .locator("circle")
          .evaluateAll((cs) => cs.map((c) => [c.getAttribute("data-value"), Number(c.getAttribute("cy"))])),
      });
      expect(await read("Snapshot size")).toEqual({
        max: "4.0 MiB",
        min: "0 B",
        latest: "latest 2.0 MiB · 3 runs",
        // Drawn to scale: 4 MiB at the top of the plot (y 10), 2 MiB half-way, 1 MiB a quarter up from the axis (y 98).
        points: [
          ["1.0 MiB", 76],
          ["4.0 MiB", 10],
          ["2.0 MiB", 54],
        ],
      });
      expect(await read("Snapshot duration")).toMatchObject({ max: "3.0 s", min: "0 ms", latest: "latest 2.0 s · 3 runs" });
      expect(await read("Drill RTO")).toMatchObject({ max: "8.0 s", latest: "latest 6.0 s · 2 runs" });
      expect(await read("Achieved RPO")).toMatchObject({ max: "5 min", latest: "latest 3 min · 2 runs" });

      const nas = page.getByTestId("pitr-targets").locator("tr", { hasText: "nas" });
      await expect(nas.locator("td").nth(1).textContent()).resolves.toContain("000000010000000000000007");
      await expect(nas.getByTestId("pitr-age").textContent()).resolves.toBe("42 s");
      const archiverLine = (await page.getByTestId("pitr-archiver").textContent())!.replace(/\s+/g, " ");
      expect(archiverLine).toContain(`PostgreSQL archiver: ${Number(archiver!.a).toLocaleString("en-US")} archived, ${Number(archiver!.f).toLocaleString("en-US")} failed`);
      // The objective the shipper keeps, and the server's backstop, as configured.
      const objectiveLine = (await page.getByTestId("pitr-objective").textContent())!.replace(/\s+/g, " ");
      expect(objectiveLine).toContain("Recovery point objective: 1 min. The daemon closes the WAL segment holding the oldest write");
      expect(objectiveLine).toContain("PostgreSQL's archive_timeout (1 min) is the backstop.");
      // The same numbers through the API the panel reads.
      const api = (await root.agent.get("/api/v1/backups/pitr").expect(200)).body;
      expect(api.targets.find((t: { target: string }) => t.target === "nas")).toMatchObject({ newestWal: "000000010000000000000007", newestAgeSeconds: 42 });
      // The PITR drills, newest first, as the panel shows them and as the API lists them.
      const drillRows = page.getByTestId("pitr-drills").locator("tbody tr");
      await expect(drillRows.count()).resolves.toBe(2);
      const cells = async (i: number) => (await drillRows.nth(i).locator("td").allInnerTexts()).map((t) => t.replace(/\s+/g, " ").trim());
      const [failedRow, passedRow] = [await cells(0), await cells(1)];
      expect(failedRow[1]).toBe("failed WAL segment 000000010000000000000005 is missing from target nas: later segments exist");
      expect(failedRow[2]).toBe("nas bb-20261201T0100Z");
      expect(failedRow.slice(4)).toEqual(["—", "—", "—"]);
      expect(passedRow[1]).toBe("passed");
      expect(passedRow.slice(4)).toEqual(["1.2 s", "7.5 s", "3 of 3 passed"]);
      const listed = (await root.agent.get("/api/v1/backups/pitr/drills").expect(200)).body as { status: string; error: string | null; rtoMs: number | null; phases: object }[];
      expect(listed.map((d) => [d.status, d.rtoMs])).toEqual([
        ["failed", null],
        ["passed", 7500],
      ]);
      expect(listed[1]!.phases).toEqual({ locateMs: 100, baseMs: 2000, replayMs: 5000, verifyMs: 400 });
      expect(violations).toEqual([]);
      await context.close();
    },
    SLOW,
  );
});

describe("restore in place from the console", () => {
  it(
    "replaces the live database only after the appliance's name is typed; a tenant made after the snapshot is gone and the safety snapshot is listed",
    async () => {
      await root.agent
        .put("/api/v1/backups/policy")
        .send({ targets: [{ kind: "fs", name: "nas", path: nas }] })
        .expect(200);
      const started = await root.agent.post("/api/v1/backups").send({}).expect(202);
      const snapshotId = started.body.id as string;
      for (let i = 0; i < 150; i++) {
        if ((await root.agent.get(`/api/v1/backups/${snapshotId}`)).body.status !== "running") break;
        await new Promise((r) => setTimeout(r, 200));
      }
      await createTenant(app, "Later Clinic");
      const name = (await root.agent.get("/api/v1/backups").expect(200)).body.applianceName as string;

      const { context, page, violations } = await openScreen(browser, app.baseUrl, root.cookie, "/backups");
      await page.getByTestId("snapshots").locator("tr", { hasText: snapshotId }).getByRole("button", { name: "Restore…" }).click();
      const dialog = page.getByTestId("restore-dialog");
      await dialog.getByLabel("Replace the live database (in place)").check();
      expect((await dialog.getByRole("status").textContent())!).toContain(`What was written after snapshot ${snapshotId} is afterwards only in the safety snapshot.`);
      const confirm = dialog.getByLabel(`Type the appliance's name, ${name}, to confirm`);
      const replace = dialog.getByRole("button", { name: "Replace the live database" });
      await confirm.fill(snapshotId);
      expect(await replace.isDisabled()).toBe(true);
      await confirm.fill(name);
      // A stale second factor: the server refuses (403 step-up-required) before anything starts, and the code dialog comes first.
      clock.advanceMinutes(app.config.auth.stepUpMaxAgeMinutes + 1);
      await replace.click();
      const stepUp = page.getByTestId("step-up");
      await stepUp.getByLabel("Authentication code").waitFor();
      expect((await root.agent.get("/api/v1/backups").expect(200)).body.snapshots.filter((s: { trigger: string }) => s.trigger === "pre_restore")).toEqual([]);
      await stepUp.getByLabel("Authentication code").fill(totpCode(root.totpSecret!, clock.now()));
      await stepUp.getByRole("button", { name: "Confirm and continue" }).click();

      const notice = page.getByRole("status").filter({ hasText: `Snapshot ${snapshotId} restored in place` });
      await notice.waitFor({ timeout: 90_000 });
      const text = (await notice.textContent())!.replace(/\s+/g, " ").trim();
      const m =
        /^Snapshot \S+ restored in place of the live database: \d+ tables, [\d,]+ rows from nas; audit chain intact up to event \d+\. Safety snapshot (\S+) was taken first \(restore it in place to undo\)\. \d+ sessions ended: sign in again\.$/.exec(
          text,
        );
      expect(m, text).not.toBeNull();
      expect(violations).toEqual([]);
      await context.close();

      expect(await superuser<{ name: string }>("SELECT name FROM tenants WHERE name = 'Later Clinic'", new URL(app.db.ownerUrl).pathname.slice(1))).toEqual([]);
      root = await signIn(app, { role: "super_admin" });
      const listed = (await root.agent.get("/api/v1/backups").expect(200)).body.snapshots as Array<{ id: string; trigger: string; status: string }>;
      expect(listed.find((s) => s.id === m![1])).toMatchObject({ trigger: "pre_restore", status: "complete" });
    },
    SLOW,
  );
});
