import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { applyMigrations, knownMigrations, pendingMigrations } from "../../../daemon/db/migrate.js";
import { APP_ROLE } from "../../../daemon/db/roles.js";
import { SqlPool, TransactionRolledBack, isUniqueViolation, scopeStatement, sql } from "../../../daemon/db/sql.js";
import { createTestDatabase, type TestDatabase } from "../../helpers/postgres.js";
import { recordPoolWire, type Wire } from "../../helpers/wire.js";

/**
 * The database layer (daemon/db/sql.ts) against a real PostgreSQL: row-level security between
 * tenants, what a transaction sends and in how many round trips (read off the wire by a proxy),
 * statements held for COMMIT, after-commit hooks, prepared statements.
 */
let db: TestDatabase;
let owner: SqlPool;
/** The app role through a counting proxy, one connection (a scope that leaked would show up). */
const holder = {} as { app: SqlPool };
let wire: Wire;
let closeWire: () => Promise<void>;
let tenantA: string;
let tenantB: string;
const poolOf = (url: string, max = 1) => new SqlPool({ url, applicationName: "wardkeep-test", max, statementTimeoutMs: 10_000 });

beforeAll(async () => {
  db = await createTestDatabase();
  owner = poolOf(db.ownerUrl, 2);
  expect(await pendingMigrations(owner)).toEqual(knownMigrations());
  expect(await applyMigrations(owner, db.ownerUrl, APP_ROLE)).toEqual(knownMigrations());
  expect(await applyMigrations(owner, db.ownerUrl, APP_ROLE)).toEqual([]);
  holder.app = poolOf(db.appUrl);
  ({ wire, close: closeWire } = await recordPoolWire(holder, "app"));
  const ids = await holder.app.inScope({ kind: "appliance" }, async (t) => {
    const rows = await t.rows<{ id: string }>("INSERT INTO tenants (name, slug) VALUES ('North Clinic', 'north'), ('South Clinic', 'south') RETURNING id");
    for (const [i, r] of rows.entries()) await t.exec(sql`INSERT INTO users (tenant_id, email, password_hash, role) VALUES (${r.id}, ${`admin${i}@clinic.example`}, 'x', 'admin')`);
    return rows.map((r) => r.id);
  });
  tenantA = ids[0]!;
  tenantB = ids[1]!;
  await owner.exec(`CREATE TABLE scratch (n int CHECK (n < 100) UNIQUE); GRANT SELECT, INSERT, UPDATE ON scratch TO ${APP_ROLE}`);
});

afterAll(async () => {
  await closeWire?.();
  await owner?.close();
  await db?.drop();
});

const app = () => holder.app;
const scratch = async (n: number) => (await owner.rows<{ n: number }>("SELECT n FROM scratch WHERE n = $1", [n])).map((r) => r.n);

describe("the sql template", () => {
  it("numbers its parameters itself, through nested fragments and joins", () => {
    const where = sql`tenant_id = ${"t1"} AND n > ${5}`;
    const s = sql`SELECT ${sql.join([sql.ident("a b"), sql.raw("c")])} FROM x WHERE ${where} AND m = ANY(${[1, 2]})`;
    expect(s.text).toBe(`SELECT "a b", c FROM x WHERE tenant_id = $1 AND n > $2 AND m = ANY($3)`);
    expect(s.values).toEqual(["t1", 5, [1, 2]]);
  });
});

describe("tenant isolation by row-level security", () => {
  it("returns only the scoped tenant's rows to a query that forgot its WHERE clause", async () => {
    const rows = await app().inScope({ kind: "tenant", tenantId: tenantA }, (t) => t.rows<{ tenant_id: string }>("SELECT tenant_id FROM users"));
    expect(rows).toEqual([{ tenant_id: tenantA }]);
  });

  it("returns another tenant's row to nobody, even when asked for it by id", async () => {
    const rows = await app().inScope({ kind: "tenant", tenantId: tenantA }, (t) => t.rows(sql`SELECT id FROM tenants WHERE id = ${tenantB}`));
    expect(rows).toEqual([]);
  });

  it("refuses to write a row into another tenant", async () => {
    const err = await app()
      .inScope({ kind: "tenant", tenantId: tenantA }, (t) =>
        t.exec(sql`INSERT INTO users (tenant_id, email, password_hash, role) VALUES (${tenantB}, 'x@y.example', 'x', 'admin')`),
      )
      .catch((e: Error) => e);
    expect(String((err as Error).message)).toMatch(/row-level security/);
  });

  it("shows nothing outside a scope, and the scope does not leak to the next transaction on the connection", async () => {
    await app().inScope({ kind: "tenant", tenantId: tenantA }, (t) => t.rows("SELECT 1 FROM users"));
    expect(await app().rows("SELECT * FROM users")).toEqual([]);
    expect(await app().rows("SELECT current_setting('wardkeep.tenant_id', true) AS t")).toEqual([{ t: expect.toBeOneOf(["", null]) }]);
  });

  it("cannot switch row security off as the app role, and runs as a role without BYPASSRLS or superuser", async () => {
    const outcome = await app()
      .transaction(async (t) => {
        await t.exec("SET LOCAL row_security = off");
        return t.rows("SELECT * FROM users");
      })
      .then(
        () => "read",
        (e: Error) => e.message,
      );
    expect(outcome).toMatch(/row-level security/);
    expect(await app().rows("SELECT rolsuper, rolbypassrls FROM pg_roles WHERE rolname = current_user")).toEqual([{ rolsuper: false, rolbypassrls: false }]);
  });

  it("refuses a tenant id that is not a UUID before anything reaches the database", async () => {
    expect(() => scopeStatement({ kind: "tenant", tenantId: "x', true); DROP TABLE users; --" })).toThrow(/tenant UUID/);
    wire.reset();
    await expect(app().inScope({ kind: "tenant", tenantId: "not-a-uuid" }, async () => "ran")).rejects.toThrow(/tenant UUID/);
    expect(wire.roundTrips).toBe(0);
  });
});

describe("round trips of a transaction", () => {
  const scopeText = scopeStatement({ kind: "tenant", tenantId: "00000000-0000-0000-0000-000000000000" }).text;

  it("opens a transaction and sets its scope with its first statement, in the same round trip", async () => {
    wire.reset();
    const rows = await app().inScope({ kind: "tenant", tenantId: tenantA }, (t) => t.rows("SELECT email FROM users"));
    // The scope's own reply (its set_config row) is not part of the statement's result.
    expect(rows).toEqual([{ email: "admin0@clinic.example" }]);
    // The opening and the statement, then the COMMIT: two round trips.
    expect(wire.roundTrips).toBe(2);
    expect(wire.statements.filter((s) => s !== scopeText && s !== "BEGIN" && s !== "COMMIT")).toEqual(["SELECT email FROM users"]);
  });

  it("keeps a statement's row count and its rows apart from the opening's", async () => {
    const updated = await app().inScope({ kind: "tenant", tenantId: tenantA }, (t) => t.exec(sql`UPDATE users SET email = email WHERE tenant_id = ${tenantA}`));
    expect(updated).toBe(1);
  });

  it("sends nothing for a transaction that sends nothing, whether it commits or fails", async () => {
    wire.reset();
    expect(await app().inScope({ kind: "tenant", tenantId: tenantA }, async () => "done")).toBe("done");
    await expect(
      app().inScope({ kind: "tenant", tenantId: tenantA }, async () => {
        throw new Error("refused before any query");
      }),
    ).rejects.toThrow("refused before any query");
    expect(wire.roundTrips).toBe(0);
  });

  it("writes a transaction whose only work is held for COMMIT in one round trip: opening, held statement and COMMIT", async () => {
    wire.reset();
    await app().inScope({ kind: "tenant", tenantId: tenantA }, async (t) => t.holdForCommit(sql`INSERT INTO scratch VALUES (${7})`));
    expect(wire.roundTrips).toBe(1);
    expect(await scratch(7)).toEqual([7]);
  });

  it("runs a single statement in a scoped transaction of its own in one round trip, prepared after its first use", async () => {
    const statement = (n: number) => sql`WITH w AS (INSERT INTO scratch VALUES (${n})) SELECT email, tenant_id FROM users`;
    wire.reset();
    expect(await app().singleStatementInScope({ kind: "tenant", tenantId: tenantA }, statement(21))).toEqual([{ email: "admin0@clinic.example", tenant_id: tenantA }]);
    expect(wire.roundTrips).toBe(1);
    wire.reset();
    expect(await app().singleStatementInScope({ kind: "tenant", tenantId: tenantB }, statement(22))).toEqual([{ email: "admin1@clinic.example", tenant_id: tenantB }]);
    expect(wire.roundTrips).toBe(1);
    // Prepared on the connection now, BEGIN and COMMIT included: no statement text is sent again.
    expect(wire.statements).toEqual([]);
    expect([...(await scratch(21)), ...(await scratch(22))]).toEqual([21, 22]);
    // Committed, not left open: the connection is outside any transaction, with no scope.
    expect(await app().rows("SELECT current_setting('wardkeep.tenant_id', true) AS t, now() = statement_timestamp() AS fresh")).toEqual([
      { t: expect.toBeOneOf(["", null]), fresh: true },
    ]);
  });

  it("prepares a statement the second time a connection runs it, and parses it no more after that", async () => {
    const read = () => app().inScope({ kind: "tenant", tenantId: tenantA }, (t) => t.rows(sql`SELECT email FROM users WHERE email LIKE ${"admin%"}`));
    const parses = () => wire.statements.filter((s) => s.startsWith("SELECT email FROM users WHERE")).length;
    wire.reset();
    for (let i = 0; i < 4; i++) expect(await read()).toEqual([{ email: "admin0@clinic.example" }]);
    // First sight unnamed, second sight named (parsed once more), then only Bind/Execute.
    expect(parses()).toBe(2);
  });
});

describe("failures", () => {
  it("rolls a transaction back when its held statement fails, reporting what onError says", async () => {
    const err = await app()
      .inScope({ kind: "tenant", tenantId: tenantA }, async (t) => {
        await t.exec(sql`INSERT INTO scratch VALUES (${31})`);
        t.holdForCommit({ ...sql`INSERT INTO scratch VALUES (${500})`, onError: () => new Error("held insert refused") });
      })
      .catch((e: Error) => e);
    expect((err as Error).message).toBe("held insert refused");
    expect(await scratch(31)).toEqual([]);
  });

  it("runs after-commit hooks only after a COMMIT that succeeded", async () => {
    const ran: string[] = [];
    await app().inScope({ kind: "tenant", tenantId: tenantA }, async (t) => {
      await t.exec(sql`INSERT INTO scratch VALUES (${41})`);
      t.afterCommit(() => ran.push("committed"));
    });
    await app()
      .inScope({ kind: "tenant", tenantId: tenantA }, async (t) => {
        t.afterCommit(() => ran.push("must not run"));
        t.holdForCommit(sql`INSERT INTO scratch VALUES (${41})`); // unique violation at COMMIT
      })
      .catch((e: unknown) => ran.push(isUniqueViolation(e) ? "unique violation" : String(e)));
    expect(ran).toEqual(["committed", "unique violation"]);
  });

  it("tells the caller when PostgreSQL turned its COMMIT into a ROLLBACK (a failed statement whose error the work swallowed)", async () => {
    const err = await app()
      .inScope({ kind: "tenant", tenantId: tenantA }, async (t) => {
        await t.exec(sql`INSERT INTO scratch VALUES (${51})`);
        await t.exec(sql`INSERT INTO scratch VALUES (${51})`).catch(() => undefined);
      })
      .catch((e: Error) => e);
    expect(err).toBeInstanceOf(TransactionRolledBack);
    expect(await scratch(51)).toEqual([]);
  });

  it("rolls a failing single statement back, says which step failed, and leaves its connection usable", async () => {
    const err = await app()
      .singleStatementInScope({ kind: "tenant", tenantId: tenantA }, sql`WITH w AS (INSERT INTO scratch VALUES (${501})) SELECT 1`)
      .catch((e: Error) => e);
    expect(err).toMatchObject({ code: "23514", step: 2 });
    expect(await scratch(501)).toEqual([]);
    expect(await app().inScope({ kind: "tenant", tenantId: tenantA }, (t) => t.rows("SELECT email FROM users"))).toEqual([{ email: "admin0@clinic.example" }]);
  });

  it("opens a transaction with the isolation and access mode asked for: a read-only one writes nothing", async () => {
    const err = await owner.transaction((t) => t.exec(sql`INSERT INTO scratch VALUES (${61})`), { isolation: "SERIALIZABLE", readOnly: true }).catch((e: Error) => e);
    expect((err as { code?: string }).code).toBe("25006"); // read-only transaction
    expect(await scratch(61)).toEqual([]);
  });

  it("keeps at most 100 prepared statements on a connection", async () => {
    const pool = poolOf(db.appUrl);
    try {
      for (let i = 0; i < 130; i++) for (let k = 0; k < 2; k++) await pool.inScope({ kind: "appliance" }, (t) => t.rows(`SELECT $1::int + ${i} AS n`, [k]));
      const counted = await pool.inScope({ kind: "appliance" }, (t) => t.one<{ n: number }>("SELECT count(*)::int AS n FROM pg_prepared_statements WHERE name LIKE 'wk_%'"));
      // 100 in all: BEGIN, the appliance scope and COMMIT are among them.
      expect(counted?.n).toBe(100);
    } finally {
      await pool.close();
    }
  });

  it("retires a connection whose prepared statement went stale under a schema change", async () => {
    await owner.exec(`CREATE TABLE stale_probe (a int); INSERT INTO stale_probe VALUES (1); GRANT SELECT ON stale_probe TO ${APP_ROLE}`);
    const pool = poolOf(db.appUrl);
    try {
      const read = () => pool.inScope({ kind: "appliance" }, (t) => t.rows(sql`SELECT * FROM stale_probe WHERE a = ${1}`));
      await read();
      await read(); // prepared now
      await owner.exec("ALTER TABLE stale_probe ADD COLUMN b int");
      const err = await read().catch((e: Error) => e);
      expect((err as { code?: string }).code).toBe("0A000"); // cached plan must not change result type
      // A new connection: the statement is prepared again and works.
      expect(await read()).toEqual([{ a: 1, b: null }]);
    } finally {
      await pool.close();
    }
  });
});
