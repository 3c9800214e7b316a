import { Sequelize } from "sequelize";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { afterCommitOnlyOnCommit } from "../../../daemon/db/connection.js";
import { createTestDatabase, type TestDatabase } from "../../helpers/postgres.js";

let db: TestDatabase;
let plain: Sequelize;
let ours: Sequelize;

beforeAll(async () => {
  db = await createTestDatabase();
  plain = new Sequelize(db.ownerUrl, { logging: false });
  ours = afterCommitOnlyOnCommit(new Sequelize(db.ownerUrl, { logging: false }));
  // A deferred foreign key is checked at COMMIT: a dangling child makes the COMMIT itself fail.
  await plain.query("CREATE TABLE parents (id int PRIMARY KEY); CREATE TABLE children (parent int REFERENCES parents DEFERRABLE INITIALLY DEFERRED)");
});

afterAll(async () => {
  await plain?.close();
  await ours?.close();
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
