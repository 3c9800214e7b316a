import { QueryTypes, Sequelize } from "sequelize";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import pg from "pg";
import { commitPipelines, runPipeline, withCommit } from "../../../daemon/db/commit-pipeline.js";
import { afterCommitOnlyOnCommit } from "../../../daemon/db/connection.js";
import { createTestDatabase, type TestDatabase } from "../../helpers/postgres.js";
import { recordPoolWire } from "../../helpers/wire.js";

let db: TestDatabase;
let plain: Sequelize;
let ours: Sequelize;
/** As the daemon's pools are set up: statements held for COMMIT, hooks only after a real one. */
let piped: Sequelize;
const sent: string[] = [];

beforeAll(async () => {
  db = await createTestDatabase();
  plain = new Sequelize(db.ownerUrl, { logging: false });
  ours = afterCommitOnlyOnCommit(new Sequelize(db.ownerUrl, { logging: false }));
  piped = afterCommitOnlyOnCommit(commitPipelines(new Sequelize(db.ownerUrl, { logging: (sql) => sent.push(sql), pool: { max: 1 } })));
  // A deferred foreign key is checked at COMMIT: a dangling child makes the COMMIT itself fail.
  await plain.query("CREATE TABLE notes (body text CHECK (length(body) < 20))");
  await plain.query("CREATE TABLE parents (id int PRIMARY KEY); CREATE TABLE children (parent int REFERENCES parents DEFERRABLE INITIALLY DEFERRED)");
});

afterAll(async () => {
  await plain?.close();
  await ours?.close();
  await piped?.close();
  await db?.drop();
});

async function commitWithHook(s: Sequelize, parent: number): Promise<{ ran: boolean; error?: string }> {
  let ran = false;
  const error = await s
    .transaction(async (t) => {
      t.afterCommit(() => {
        ran = true;
      });
      await s.query("INSERT INTO parents VALUES (1) ON CONFLICT DO NOTHING", { transaction: t });
      await s.query("INSERT INTO children VALUES ($1)", { bind: [parent], transaction: t });
    })
    .then(
      () => undefined,
      (e: Error) => e.message,
    );
  return { ran, ...(error ? { error } : {}) };
}

describe("afterCommit hooks", () => {
  it("run after a COMMIT that succeeds", async () => {
    expect(await commitWithHook(ours, 1)).toEqual({ ran: true });
  });

  it("do not run when the COMMIT fails (Sequelize alone would run them)", async () => {
    const failed = await commitWithHook(ours, 999);
    expect(failed.error).toMatch(/foreign key/);
    expect(failed.ran).toBe(false);
    // What the wrapper exists for: plain Sequelize runs the hooks of a failed commit.
    expect((await commitWithHook(plain, 999)).ran).toBe(true);
  });
});

describe("statements sent with COMMIT", () => {
  const held = (body: string, onError = (e: Error) => new Error(`held statement failed: ${e.message}`)) => ({ text: "INSERT INTO notes VALUES ($1)", values: [body], onError });
  const notes = async () => (await plain.query<{ body: string }>("SELECT body FROM notes ORDER BY body", { type: QueryTypes.SELECT })).map((r) => r.body);

  it("writes them with the COMMIT, after the transaction's own work, in one round trip", async () => {
    sent.length = 0;
    let ran = false;
    await piped.transaction(async (t) => {
      await withCommit(piped, t, held("held one"));
      await withCommit(piped, t, held("held two"));
      await piped.query("INSERT INTO notes VALUES ('direct')", { transaction: t });
      t.afterCommit(() => {
        ran = true;
      });
    });
    expect(await notes()).toEqual(["direct", "held one", "held two"]);
    expect(ran).toBe(true);
    // Sequelize saw START and the direct INSERT; the held statements and COMMIT went as one pipeline.
    expect(sent.map((s) => s.replace(/^Executing \([^)]*\): /, ""))).toEqual(["START TRANSACTION;", "INSERT INTO notes VALUES ('direct')"]);
  });

  it("rolls the work back and reports the held statement's own error when it fails", async () => {
    await plain.query("DELETE FROM notes");
    let ran = false;
    const err = await piped
      .transaction(async (t) => {
        await piped.query("INSERT INTO notes VALUES ('work')", { transaction: t });
        await withCommit(piped, t, held("far too long for the check constraint"));
        t.afterCommit(() => {
          ran = true;
        });
      })
      .catch((e: Error) => e);
    expect((err as Error).message).toMatch(/^held statement failed: .*check constraint/);
    expect(await notes()).toEqual([]);
    expect(ran).toBe(false);
    // The pool still works (the failed connection was replaced).
    await piped.transaction((t) => withCommit(piped, t, held("after")));
    expect(await notes()).toEqual(["after"]);
  });

  it("prepares a held statement on its connection once: later COMMITs only bind and execute it", async () => {
    await plain.query("DELETE FROM notes");
    // A fresh connection, on which nothing is prepared yet.
    await (piped.connectionManager as unknown as { pool: { destroyAllNow(): Promise<void> } }).pool.destroyAllNow();
    const wire = await recordPoolWire(piped);
    for (const body of ["one", "two", "three"]) await piped.transaction((t) => withCommit(piped, t, held(body)));
    expect(await notes()).toEqual(["one", "three", "two"]);
    expect(wire.statements.filter((s) => s === "INSERT INTO notes VALUES ($1)")).toHaveLength(1);
    const names = await piped.query<{ name: string }>("SELECT name FROM pg_prepared_statements", { type: QueryTypes.SELECT });
    expect(names.map((n) => n.name)).toEqual([expect.stringMatching(/^wk_commit_[0-9a-f]{24}$/)]);
  });

  it("prepares a held statement again, closing the old name first, after a pipeline failed at it", async () => {
    await plain.query("DELETE FROM notes");
    const client = new pg.Client({ connectionString: db.ownerUrl });
    await client.connect();
    try {
      const step = (body: string) => ({ text: "INSERT INTO notes VALUES ($1)", values: [body], prepared: true });
      // Parsed (the name now exists on the server), then failed while executing.
      await expect(runPipeline(client, [{ text: "BEGIN", values: [] }, step("much too long for the check constraint"), { text: "COMMIT", values: [] }])).rejects.toMatchObject({ step: 1 });
      await client.query("ROLLBACK");
      // Parsing the same name again without closing it would fail: "prepared statement already exists".
      await runPipeline(client, [{ text: "BEGIN", values: [] }, step("retried"), { text: "COMMIT", values: [] }]);
      await runPipeline(client, [{ text: "BEGIN", values: [] }, step("again"), { text: "COMMIT", values: [] }]);
      expect(await notes()).toEqual(["again", "retried"]);
    } finally {
      await client.end();
    }
  });

  it("reports a failure of the COMMIT itself as it is, not as the held statement's", async () => {
    await plain.query("DELETE FROM notes");
    const err = await piped
      .transaction(async (t) => {
        await withCommit(piped, t, held("fine"));
        await piped.query("INSERT INTO children VALUES (4242)", { transaction: t });
      })
      .catch((e: Error) => e);
    expect((err as Error).message).toMatch(/foreign key/);
    expect((err as Error).message).not.toMatch(/held statement failed/);
    expect(await notes()).toEqual([]);
  });
});
