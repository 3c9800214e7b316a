import pg from "pg";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { createTenant, signIn } from "../../helpers/actors.js";
import { startTestAppliance, type TestAppliance } from "../../helpers/appliance.js";
import { createPatient } from "../../helpers/records.js";

/**
 * A note's versions refer to their note through statement-level triggers, not a foreign key
 * (migration 0291). The database must refuse what the foreign key refused, concurrent
 * transactions included: each case here fails if its trigger is dropped.
 */

let app: TestAppliance;
let su: pg.Client;
let other: pg.Client;
let tenant: string;
let otherTenant: string;
let patient: string;
let author: string;
const BODY = Buffer.from("sealed elsewhere");

beforeAll(async () => {
  app = await startTestAppliance();
  su = new pg.Client({ connectionString: app.db.superuserUrl });
  other = new pg.Client({ connectionString: app.db.superuserUrl });
  await Promise.all([su.connect(), other.connect()]);
  tenant = (await createTenant(app, "References General")).id;
  otherTenant = (await createTenant(app, "References Other")).id;
  author = (await signIn(app, { role: "practitioner", tenantId: tenant })).user.id;
  patient = await createPatient(app, tenant);
}, 60_000);

afterAll(async () => {
  await Promise.all([su?.end(), other?.end()]);
  await app?.close();
});

async function note(): Promise<string> {
  const r = await su.query<{ id: string }>(
    "INSERT INTO notes (tenant_id, patient_id, kind, created_at, created_by, updated_at) VALUES ($1, $2, 'note', now(), $3, now()) RETURNING id",
    [tenant, patient, author],
  );
  return r.rows[0]!.id;
}
const version = (client: pg.Client, noteId: string, tenantId = tenant) =>
  client.query("INSERT INTO note_versions (tenant_id, patient_id, note_id, version, change, body_enc, created_at, created_by) VALUES ($1, $2, $3, 1, 'original', $4, now(), $5)", [
    tenantId,
    patient,
    noteId,
    BODY,
    author,
  ]);
const versionsOf = async (noteId: string) => Number((await su.query<{ n: string }>("SELECT count(*) AS n FROM note_versions WHERE note_id = $1", [noteId])).rows[0]!.n);
const noteExists = async (noteId: string) => (await su.query("SELECT 1 FROM notes WHERE id = $1", [noteId])).rowCount === 1;
const refusal = (p: Promise<unknown>) =>
  p.then(
    () => null,
    (e: pg.DatabaseError) => ({ code: e.code, message: e.message }),
  );
/** Resolves true if `p` is still waiting after `ms` (a lock wait), false if it settled. */
const stillWaiting = (p: Promise<unknown>, ms = 300) =>
  Promise.race([
    p.then(
      () => false,
      () => false,
    ),
    new Promise<boolean>((r) => setTimeout(() => r(true), ms)),
  ]);

describe("note versions refer to their note", () => {
  it("refuses a version of a note that does not exist, or of another tenant's key, and keeps nothing", async () => {
    const missing = "00000000-0000-4000-8000-000000000001";
    expect(await refusal(version(su, missing))).toMatchObject({ code: "23503", message: expect.stringMatching(/note that does not exist/) });
    expect(await versionsOf(missing)).toBe(0);
    const mine = await note();
    expect(await refusal(version(su, mine, otherTenant))).toMatchObject({ code: "23503" });
    expect(await versionsOf(mine)).toBe(0);
    await version(su, mine);
    expect(await versionsOf(mine)).toBe(1);
  });

  it("refuses to delete a note that still has versions, and deletes a note together with its versions", async () => {
    const n = await note();
    await version(su, n);
    expect(await refusal(su.query("DELETE FROM notes WHERE id = $1", [n]))).toMatchObject({ code: "23503", message: expect.stringMatching(/without their note/) });
    expect(await noteExists(n)).toBe(true);
    // The purge's shape: versions and note in one statement, inside a purge (the history guard lets it through).
    await su.query("BEGIN");
    await su.query("SELECT set_config('wardkeep.purge_tenant', $1, true)", [tenant]);
    await su.query("WITH v AS (DELETE FROM note_versions WHERE note_id = $1 RETURNING 1) DELETE FROM notes WHERE id = $1", [n]);
    await su.query("COMMIT");
    expect([await noteExists(n), await versionsOf(n)]).toEqual([false, 0]);
  });

  it("outside a purge, the history guard still refuses deleting a version", async () => {
    const n = await note();
    await version(su, n);
    expect(await refusal(su.query("DELETE FROM note_versions WHERE note_id = $1", [n]))).toMatchObject({ code: "42501", message: expect.stringMatching(/append-only/) });
    expect(await versionsOf(n)).toBe(1);
  });

  it("a delete that waited for a concurrent version's transaction sees that version and is refused", async () => {
    const n = await note();
    await other.query("BEGIN");
    await version(other, n); // locks the note FOR KEY SHARE until its transaction ends
    const del = refusal(su.query("DELETE FROM notes WHERE id = $1", [n]));
    expect(await stillWaiting(del)).toBe(true);
    await other.query("COMMIT");
    expect(await del).toMatchObject({ code: "23503" });
    expect([await noteExists(n), await versionsOf(n)]).toEqual([true, 1]);
  });

  it("a version that waited for a concurrent delete of its note is refused once the delete commits", async () => {
    const n = await note();
    await other.query("BEGIN");
    await other.query("DELETE FROM notes WHERE id = $1", [n]);
    const ins = refusal(version(su, n));
    expect(await stillWaiting(ins)).toBe(true);
    await other.query("COMMIT");
    expect(await ins).toMatchObject({ code: "23503" });
    expect(await versionsOf(n)).toBe(0);
  });

  it("refuses deleting notes outside READ COMMITTED, where a snapshot could miss a newer version", async () => {
    const n = await note();
    await su.query("BEGIN ISOLATION LEVEL REPEATABLE READ");
    const r = await refusal(su.query("DELETE FROM notes WHERE id = $1", [n]));
    await su.query("ROLLBACK");
    expect(r).toMatchObject({ code: "0A000", message: expect.stringMatching(/READ COMMITTED/) });
    expect(await noteExists(n)).toBe(true);
  });

  it("refuses changing a note's id or tenant, and allows changing anything else", async () => {
    const n = await note();
    await version(su, n);
    expect(await refusal(su.query("UPDATE notes SET id = gen_random_uuid() WHERE id = $1", [n]))).toMatchObject({ code: "23503" });
    expect(await refusal(su.query("UPDATE notes SET tenant_id = $2 WHERE id = $1", [n, otherTenant]))).toMatchObject({ code: "23503" });
    await su.query("UPDATE notes SET updated_at = now(), version = version + 1 WHERE id = $1", [n]);
    expect(await noteExists(n)).toBe(true);
  });

  it("refuses TRUNCATE of notes while versions remain, even for the owner, whom row-level security shows nothing", async () => {
    const owner = new pg.Client({ connectionString: app.db.ownerUrl });
    await owner.connect();
    try {
      expect(await refusal(owner.query("TRUNCATE notes"))).toMatchObject({ code: "23503", message: expect.stringMatching(/TRUNCATE on notes/) });
      expect(Number((await su.query<{ n: string }>("SELECT count(*) AS n FROM notes")).rows[0]!.n)).toBeGreaterThan(0);
      // The caller's scope is as it was after the check.
      await owner.query("BEGIN");
      await owner.query("SELECT set_config('wardkeep.scope', 'tenant', true)");
      await refusal(owner.query("SAVEPOINT s; TRUNCATE notes"));
      await owner.query("ROLLBACK TO SAVEPOINT s");
      expect((await owner.query("SELECT current_setting('wardkeep.scope', true) AS s")).rows[0].s).toBe("tenant");
      await owner.query("ROLLBACK");
    } finally {
      await owner.end();
    }
  });

  it("reference_violations() names a broken reference (what a restore checks after its load)", async () => {
    expect((await su.query("SELECT * FROM reference_violations()")).rows).toEqual([]);
    await su.query("BEGIN");
    await su.query("ALTER TABLE note_versions DISABLE TRIGGER note_versions_have_notes");
    await version(su, "00000000-0000-4000-8000-000000000002");
    const found = (await su.query("SELECT reference, rows::int FROM reference_violations()")).rows;
    await su.query("ROLLBACK");
    expect(found).toEqual([{ reference: "note_versions -> notes", rows: 1 }]);
  });
});
