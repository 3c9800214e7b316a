import { spawnSync } from "node:child_process";
import fs from "node:fs";
import { createPublicKey, verify } from "node:crypto";
import pg from "pg";
import { afterAll, describe, expect, it } from "vitest";
import { tempDir, testEnv, type TestAppliance } from "../../helpers/appliance.js";
import { spawnDaemon, type DaemonProcess } from "../../helpers/daemon-process.js";
import { createTestDatabase, type TestDatabase } from "../../helpers/postgres.js";
import { auditEvents } from "../auth/identity-helpers.js";

/** Whether this machine lets the test start a process in a PID namespace of its own (root or CAP_SYS_ADMIN). */
const PID_NAMESPACES = spawnSync("unshare", ["--pid", "--fork", "--mount-proc", "true"], { stdio: "ignore" }).status === 0;
if (!PID_NAMESPACES) console.warn("retention kill test: PID namespaces are refused here, so the restart beside a database in another namespace is not checked");

/**
 * A purge killed with SIGKILL in the middle resumes after a restart: the daemon runs as its own
 * process with the retention-purge job firing every second; it is killed once some batches have
 * committed, then started again. Nothing is lost or counted twice: at the kill, the run's counts
 * equal the rows gone; at the end, the same run's signed certificate, the audit events of its
 * batches and the rows left all agree, and the held patient's notes are all there.
 */
const NOTES = 6_000;
const HELD = 100;
const BATCH = 100;
let db: TestDatabase | undefined;
let daemon: DaemonProcess | undefined;
const dir = tempDir("wardkeep-retention-kill-");
let su: pg.Client | undefined;

afterAll(async () => {
  await daemon?.stop("SIGTERM").catch(() => undefined);
  await su?.end();
  await db?.drop();
  fs.rmSync(dir, { recursive: true, force: true });
});

type Run = {
  id: string;
  status: string;
  counts: Record<string, { count: number; batches: number }>;
  certificate: string | null;
  signature: Buffer | null;
  public_key: Buffer | null;
};
/** The runs that purged notes (the job also runs, and certifies, empty runs every second). */
const runs = async () =>
  (await su!.query<Run>("SELECT id::text, status, counts, certificate, signature, public_key FROM retention_runs WHERE counts ? 'note' ORDER BY started_at")).rows;
/** The nice values of the purge's backends now (application_name wardkeep-purge), read from the kernel. */
const purgeBackendNice = async () =>
  (await su!.query<{ pid: number }>("SELECT pid FROM pg_stat_activity WHERE application_name = 'wardkeep-purge'")).rows
    .map((r) => {
      try {
        return Number(fs.readFileSync(`/proc/${r.pid}/stat`, "utf8").split(") ")[1]!.split(" ")[16]);
      } catch {
        return null; // gone between the query and the read
      }
    })
    .filter((n): n is number => n !== null);
const notesOf = async (patient: string) => Number((await su!.query<{ n: string }>("SELECT count(*) AS n FROM notes WHERE patient_id = $1", [patient])).rows[0]!.n);

async function until<T>(what: string, read: () => Promise<T>, ok: (v: T) => boolean, timeoutMs: number, everyMs = 20): Promise<T> {
  const end = Date.now() + timeoutMs;
  for (;;) {
    const v = await read();
    if (ok(v)) return v;
    if (Date.now() > end) throw new Error(`timed out waiting for ${what}: ${JSON.stringify(v).slice(0, 500)}`);
    await new Promise((r) => setTimeout(r, everyMs));
  }
}

describe("retention purge killed with SIGKILL", () => {
  it("resumes the same run after a restart: no row lost or counted twice, the certificate equals the audit events", async () => {
    db = await createTestDatabase();
    // The purge fires every second; small batches so the kill lands between many commits; two
    // connections of its own, so two batches run at once on disjoint rows.
    const env = testEnv(db, dir, {
      WARDKEEP_JOBS_SCHEDULES_RETENTION_PURGE: "* * * * * *",
      WARDKEEP_RETENTION_BATCH_SIZE: String(BATCH),
      WARDKEEP_RETENTION_PURGE_CONNECTIONS: "2",
      WARDKEEP_RETENTION_PURGE_NICE: "19",
      WARDKEEP_LOG_LEVEL: "info",
      WARDKEEP_BACKUP_SCHEDULER_ENABLED: "false",
    });
    daemon = spawnDaemon(env);
    await daemon.port();

    su = new pg.Client({ connectionString: db.superuserUrl });
    await su.connect();
    // One clinic, ten years ago: a patient with NOTES notes (and their versions), another under legal hold with HELD.
    const old = new Date(Date.now() - 10 * 365 * 86_400_000);
    await su.query("BEGIN");
    const { rows } = await su.query<{ tenant: string; doctor: string; gone: string; held: string }>(
      `WITH t AS (INSERT INTO tenants (name, slug) VALUES ('Kill Test Clinic', 'kill-test-clinic') RETURNING id),
            u AS (INSERT INTO users (tenant_id, email, password_hash, role) SELECT id, 'dr.kill@clinic.example', 'x', 'practitioner' FROM t RETURNING id, tenant_id),
            p AS (INSERT INTO patients (tenant_id, name_enc, created_at, updated_at) SELECT tenant_id, '\\x00', $1, $1 FROM u, generate_series(1, 2) RETURNING id)
       SELECT (SELECT id FROM t)::text AS tenant, (SELECT id FROM u)::text AS doctor, (SELECT min(id::text) FROM p) AS gone, (SELECT max(id::text) FROM p) AS held`,
      [old],
    );
    const { tenant, doctor, gone, held } = rows[0]!;
    await su.query("INSERT INTO legal_holds (tenant_id, patient_id, reason_enc, placed_at, placed_by) VALUES ($1, $2, '\\x00', now(), $3)", [tenant, held, doctor]);
    // The patients themselves stay: this test is about the notes.
    await su.query("INSERT INTO retention_rules (tenant_id, record_class, trigger, period_days, updated_at) VALUES ($1, 'patient', 'last_encounter', 36500, now())", [tenant]);
    // A note a second, from `old` on (the held patient's the day before), so creation order is not id order.
    for (const [patient, n, from] of [
      [gone, NOTES, old],
      [held, HELD, new Date(old.getTime() - 86_400_000)],
    ] as const) {
      await su.query(
        `WITH made AS (INSERT INTO notes (tenant_id, patient_id, kind, created_at, created_by, updated_at)
                       SELECT $1, $2, 'note', $4::timestamptz + g * interval '1 second', $5, $4 FROM generate_series(0, $3 - 1) g RETURNING id, created_at)
         INSERT INTO note_versions (tenant_id, patient_id, note_id, version, change, body_enc, created_at, created_by)
         SELECT $1, $2, id, 1, 'original', '\\x00', created_at, $5 FROM made`,
        [tenant, patient, n, from, doctor],
      );
    }

    await su.query("COMMIT");

    // Some batches committed, far from all: kill -9. Meanwhile the purge's two backends run at
    // retention.purgeNice (the daemon and PostgreSQL share this host).
    await until("a few committed batches", runs, (r) => (r[0]?.counts.note?.count ?? 0) >= 5 * BATCH, 90_000);
    expect(await purgeBackendNice()).toEqual([19, 19]);
    expect(daemon.stdout()).not.toContain("keeps its priority");
    daemon.child.kill("SIGKILL");
    expect(await daemon.exited).toBeNull();
    const [atKill] = await runs();
    expect(atKill!.status).toBe("running");
    const left = await notesOf(gone);
    expect(left).toBeGreaterThan(0);
    // Every committed batch is counted, and only those: the rows gone equal the run's count.
    expect(atKill!.counts.note!.count).toBe(NOTES - left);
    expect(Number((await su.query<{ n: string }>("SELECT count(*) AS n FROM note_versions WHERE patient_id = $1", [gone])).rows[0]!.n)).toBe(left);

    // Restarted in a PID namespace of its own, as in a container beside its database: the backend's
    // pid names no process the daemon can see, so the purge's backends keep their priority and the
    // daemon says why in one log line. Where namespaces are refused, the restart is a plain one and
    // only the resume is checked (register.test.ts covers the refusals without a namespace).
    const restartedAt = new Date();
    daemon = spawnDaemon(env, PID_NAMESPACES ? { prefix: ["unshare", "--pid", "--fork", "--kill-child", "--mount-proc"] } : {});
    await daemon.port();
    await until("the resumed purge's backends", purgeBackendNice, (n) => n.length > 0, 60_000);
    if (PID_NAMESPACES) {
      expect(await purgeBackendNice()).not.toContain(19);
      await daemon.waitFor(/keeps its priority/);
    }
    const finished = await until("the resumed run to finish", runs, (r) => r[0]?.status === "finished", 120_000, 200);
    // The same run resumed (its cutoffs and counts), not a new one that would count from zero.
    expect(finished.map((r) => r.id)).toEqual([atKill!.id]);
    const run = finished[0]!;
    expect(await notesOf(gone)).toBe(0);
    expect(await notesOf(held)).toBe(HELD);
    if (PID_NAMESPACES) {
      const told = daemon.logs().filter((l) => /keeps its priority/.test(String(l.message)));
      expect(told[0]!.message).toMatch(
        /^retention purge: its database backend keeps its priority \(retention\.purgeNice 19 not applied\): (no process \d+ on this host|process \d+ on this host is not the purge's backend): PostgreSQL runs on another host or in another container$/,
      );
      // One line per run of the purge (the job fires every second), not one per connection or batch.
      const purgeRuns = await su.query<{ n: number }>("SELECT count(*)::int AS n FROM job_runs WHERE job = 'retention-purge' AND started_at >= $1", [restartedAt]);
      expect(told.length).toBeGreaterThan(0);
      expect(told.length).toBeLessThanOrEqual(purgeRuns.rows[0]!.n);
    }
    // unshare ignores SIGTERM while its child runs; killing it takes the daemon along (--kill-child).
    await daemon.stop("SIGKILL");
    const publicKey = createPublicKey({ key: run.public_key!, format: "der", type: "spki" });
    expect(verify(null, Buffer.from(run.certificate!, "utf8"), publicKey, run.signature!)).toBe(true);
    const cert = JSON.parse(run.certificate!);
    expect(cert.destroyed.note.count).toBe(NOTES);
    const batches = (await auditEvents({ db } as TestAppliance, { action: "retention.purge.batch" }))
      .filter((e) => e.resource_id === run.id)
      .map((e) => JSON.parse(e.reason!) as { class: string; count: number; firstId: string; lastId: string; firstAt: string; lastAt: string });
    const noteBatches = batches.filter((b) => b.class === "note");
    expect(noteBatches.reduce((s, b) => s + b.count, 0)).toBe(NOTES);
    expect(noteBatches).toHaveLength(cert.destroyed.note.batches);
    expect(noteBatches.every((b) => b.count <= BATCH)).toBe(true);
    // Notes go in creation order: each batch's range runs from its first to its last note by
    // (creation time, id), and no range overlaps another: no batch was counted twice. The two
    // workers' ranges were recorded before the kill and kept after it.
    expect(cert.rules.note.order).toBe("creation");
    const key = (at: string, id: string) => `${at} ${id}`;
    const ranges = noteBatches.map((b) => [key(b.firstAt, b.firstId), key(b.lastAt, b.lastId)] as const).sort((a, b) => a[0].localeCompare(b[0]));
    // A batch is a run of consecutive notes in creation order: one a second, so its last is count − 1 seconds after its first.
    expect(noteBatches.filter((b) => Date.parse(b.lastAt) - Date.parse(b.firstAt) !== (b.count - 1) * 1000)).toEqual([]);
    expect(noteBatches.map((b) => b.firstAt).sort()[0]).toBe(old.toISOString().replace("Z", "000Z"));
    for (let i = 1; i < ranges.length; i++) expect(ranges[i]![0] > ranges[i - 1]![1]).toBe(true);
    // The certificate's range spans every batch's, whichever of the two workers committed last.
    expect([key(cert.destroyed.note.firstAt, cert.destroyed.note.firstId), key(cert.destroyed.note.lastAt, cert.destroyed.note.lastId)]).toEqual([
      ranges[0]![0],
      ranges
        .map((r) => r[1])
        .sort()
        .at(-1),
    ]);
    expect((await su!.query<{ splits: Record<string, unknown[]> }>("SELECT splits FROM retention_runs WHERE id = $1", [run.id])).rows[0]!.splits.note).toHaveLength(1);

    // The database still refuses a note whose versions are left, even inside a purge transaction
    // that the history guard lets through (the statement-level check of migration 0291).
    await su.query("BEGIN");
    await su.query("SELECT set_config('wardkeep.purge_tenant', $1, true)", [tenant]);
    const refused = await su.query("DELETE FROM notes WHERE patient_id = $1", [held]).catch((e: pg.DatabaseError) => e);
    await su.query("ROLLBACK");
    expect(refused).toMatchObject({ code: "23503", message: expect.stringMatching(/without their note/) });
    expect(await notesOf(held)).toBe(HELD);
  }, 240_000);
});
