import pg from "pg";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { carryOpenings, holdOpening } from "../../../daemon/db/opening-pipeline.js";
import { nameRepeatedStatements } from "../../../daemon/db/prepared-statements.js";
import { createTestDatabase, type TestDatabase } from "../../helpers/postgres.js";
import { recordWire } from "../../helpers/wire.js";

let db: TestDatabase;

beforeAll(async () => {
  db = await createTestDatabase();
});

afterAll(async () => {
  await db?.drop();
});

/** Runs `work` on a client set up as the daemon's pools set up theirs (daemon/db/connection.ts). */
async function withDaemonClient(work: (client: pg.Client) => Promise<void>): Promise<void> {
  const client = new pg.Client({ connectionString: db.ownerUrl });
  await client.connect();
  carryOpenings(client);
  nameRepeatedStatements(client);
  try {
    await work(client);
  } finally {
    await client.end();
  }
}

/** As Sequelize calls it: text, values, callback. */
function run(client: pg.Client, text: string, values: unknown[]): Promise<pg.QueryResult> {
  return new Promise((resolve, reject) =>
    (client.query as unknown as (t: string, v: unknown[], cb: (e: Error | null, r: pg.QueryResult) => void) => void)(text, values, (e, r) => (e ? reject(e) : resolve(r))),
  );
}

const prepared = async (client: pg.Client) => (await client.query("SELECT count(*)::int AS n FROM pg_prepared_statements")).rows[0].n as number;

describe("prepared statements for repeated queries", () => {
  it("prepares a statement the second time a connection runs it, and parses it no more after that", async () => {
    await withDaemonClient(async (client) => {
      const wire = recordWire(client);
      const text = "SELECT $1::int + 1 AS n";
      for (let i = 0; i < 4; i++) expect((await run(client, text, [i])).rows).toEqual([{ n: i + 1 }]);
      // Unnamed the first time, named and parsed the second, only bound and executed after.
      expect(wire.statements).toEqual([text, text]);
      expect(await prepared(client)).toBe(1);
    });
  });

  it("names a statement that carries a transaction's opening, and a failed opening does not leave the name believed prepared", async () => {
    await withDaemonClient(async (client) => {
      const text = "SELECT $1::text AS v";
      await run(client, text, ["first"]);
      holdOpening(client, ["BEGIN", "SELECT 1 / 0"]);
      await expect(run(client, text, ["second"])).rejects.toThrow(/division by zero/);
      await client.query("ROLLBACK");
      expect(await prepared(client)).toBe(0);
      // The next run parses it again instead of binding a statement that was never prepared.
      holdOpening(client, ["BEGIN", "SELECT 42"]);
      expect((await run(client, text, ["third"])).rows).toEqual([{ v: "third" }]);
      await client.query("COMMIT");
      expect((await run(client, text, ["fourth"])).rows).toEqual([{ v: "fourth" }]);
      expect(await prepared(client)).toBe(1);
    });
  });

  it("keeps at most 100 names on a connection", async () => {
    await withDaemonClient(async (client) => {
      for (let i = 0; i < 130; i++) {
        for (let k = 0; k < 2; k++) await run(client, `SELECT $1::int AS n${i}`, [k]);
      }
      expect(await prepared(client)).toBe(100);
      // Beyond the cap statements still run, unnamed.
      expect((await run(client, "SELECT $1::int AS n129", [7])).rows).toEqual([{ n129: 7 }]);
    });
  });

  it("retires a connection whose prepared statement went stale under a schema change", async () => {
    await withDaemonClient(async (client) => {
      await client.query("CREATE TABLE shapes (a int); INSERT INTO shapes VALUES (1)");
      const text = "SELECT * FROM shapes WHERE a = $1";
      await run(client, text, [1]);
      await run(client, text, [1]);
      await client.query("ALTER TABLE shapes ADD COLUMN b int");
      await expect(run(client, text, [1])).rejects.toThrow(/cached plan must not change result type/);
      expect((client as unknown as { _invalid?: boolean })._invalid).toBe(true);
    });
  });
});
