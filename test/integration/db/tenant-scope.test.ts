import { QueryTypes, Sequelize } from "sequelize";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { applyMigrations, knownMigrations, pendingMigrations } from "../../../daemon/db/migrate.js";
import pg from "pg";
import { commitPipelines, withCommit } from "../../../daemon/db/commit-pipeline.js";
import { holdOpening } from "../../../daemon/db/opening-pipeline.js";
import { inScope, scopedTransactions, scopeStatement, singleStatementInScope } from "../../../daemon/db/tenant-scope.js";
import { APP_ROLE } from "../../../daemon/db/roles.js";
import { createTestDatabase, type TestDatabase } from "../../helpers/postgres.js";
import { recordPoolWire, recordWire, type Wire } from "../../helpers/wire.js";

let db: TestDatabase;
let owner: Sequelize;
let app: Sequelize;
/** As the daemon opens it (daemon/db/connection.ts): START TRANSACTION and the scope travel with the first statement. */
let scopedApp: Sequelize;
let wire: Wire;
let tenantA: string;
let tenantB: string;

const select = <T extends object>(s: Sequelize, sql: string, transaction?: import("sequelize").Transaction) =>
  s.query<T>(sql, { type: QueryTypes.SELECT, transaction });

beforeAll(async () => {
  db = await createTestDatabase();
  owner = new Sequelize(db.ownerUrl, { logging: false });
  // One connection, so a scope that leaked past its transaction would show up in the next query.
  app = new Sequelize(db.appUrl, { logging: false, pool: { max: 1 } });
  scopedApp = scopedTransactions(commitPipelines(new Sequelize(db.appUrl, { logging: false, pool: { max: 1 } })));
  expect(await pendingMigrations(owner)).toEqual(knownMigrations());
  expect(await applyMigrations(owner, db.ownerUrl, APP_ROLE)).toEqual(knownMigrations());
  expect(await applyMigrations(owner, db.ownerUrl, APP_ROLE)).toEqual([]);
  const ids = await inScope(app, { kind: "appliance" }, async (t) => {
    const rows = await app.query<{ id: string }>("INSERT INTO tenants (name, slug) VALUES ('North Clinic', 'north'), ('South Clinic', 'south') RETURNING id", {
      type: QueryTypes.SELECT,
      transaction: t,
    });
    for (const [i, r] of rows.entries()) {
      await app.query("INSERT INTO users (tenant_id, email, password_hash, role) VALUES ($1, $2, 'x', 'admin')", {
        bind: [r.id, `admin${i}@clinic.example`],
        transaction: t,
      });
    }
    return rows.map((r) => r.id);
  });
  tenantA = ids[0]!;
  tenantB = ids[1]!;
  await owner.query("CREATE TABLE scratch (n int CHECK (n < 100)); GRANT SELECT, INSERT, UPDATE ON scratch TO " + APP_ROLE);
  wire = await recordPoolWire(scopedApp);
});

afterAll(async () => {
  await app?.close();
  await scopedApp?.close();
  await owner?.close();
  await db?.drop();
});

describe.each([
  ["a plain pool (scope in its own statement)", () => app],
  ["the daemon's pool (opening sent with the first statement)", () => scopedApp],
])("tenant isolation by row-level security, through %s", (_name, pool) => {
  let app: Sequelize;
  beforeAll(() => {
    app = pool();
  });

  it("returns only the scoped tenant's rows to a query that forgot its WHERE clause", async () => {
    const rows = await inScope(app, { kind: "tenant", tenantId: tenantA! }, (t) => select<{ tenant_id: string }>(app, "SELECT tenant_id FROM users", t));
    expect(rows.length).toBe(1);
    expect(rows.every((r) => r.tenant_id === tenantA)).toBe(true);
    const tenants = await inScope(app, { kind: "tenant", tenantId: tenantA! }, (t) => select<{ id: string }>(app, "SELECT id FROM tenants", t));
    expect(tenants.map((r) => r.id)).toEqual([tenantA]);
  });

  it("returns another tenant's row to nobody, even when asked for it by id", async () => {
    const rows = await inScope(app, { kind: "tenant", tenantId: tenantA! }, (t) =>
      app.query("SELECT * FROM users WHERE tenant_id = $1", { bind: [tenantB], type: QueryTypes.SELECT, transaction: t }),
    );
    expect(rows).toEqual([]);
  });

  it("refuses to write a row into another tenant", async () => {
    await expect(
      inScope(app, { kind: "tenant", tenantId: tenantA! }, (t) =>
        app.query("INSERT INTO users (tenant_id, email, password_hash, role) VALUES ($1, 'intruder@clinic.example', 'x', 'admin')", {
          bind: [tenantB],
          transaction: t,
        }),
      ),
    ).rejects.toThrow(/row-level security/);
    const moved = await inScope(app, { kind: "tenant", tenantId: tenantA! }, (t) =>
      app.query("UPDATE users SET tenant_id = $1", { bind: [tenantB], transaction: t }).then(() => "updated", (e: Error) => e.message),
    );
    expect(moved).toMatch(/row-level security/);
  });

  it("shows nothing outside a scope, and the scope does not leak to the next transaction on the connection", async () => {
    await inScope(app, { kind: "tenant", tenantId: tenantA! }, (t) => select(app, "SELECT 1 FROM users", t));
    expect(await select(app, "SELECT * FROM users")).toEqual([]);
    expect(await select(app, "SELECT * FROM tenants")).toEqual([]);
  });

  it("cannot switch row security off as the app role", async () => {
    const outcome = await app.transaction(async (t) => {
      await app.query("SET LOCAL row_security = off", { transaction: t });
      return select(app, "SELECT * FROM users", t).then(
        () => "read",
        (e: Error) => e.message,
      );
    });
    expect(outcome).toMatch(/row-level security/);
  });

  it("runs requests as a role without BYPASSRLS or superuser", async () => {
    const [role] = await select<{ rolsuper: boolean; rolbypassrls: boolean }>(app, "SELECT rolsuper, rolbypassrls FROM pg_roles WHERE rolname = current_user");
    expect(role).toEqual({ rolsuper: false, rolbypassrls: false });
  });
});

describe("setting the scope", () => {
  const opening = () => ["START TRANSACTION", scopeStatement({ kind: "tenant", tenantId: tenantA })];

  it("opens a daemon transaction and sets its scope with its first statement, in the same round trip", async () => {
    wire.reset();
    const rows = await inScope(scopedApp, { kind: "tenant", tenantId: tenantA }, (t) => select<{ email: string }>(scopedApp, "SELECT email FROM users", t));
    // The scope's own reply (its set_config row) is not part of the query's result.
    expect(rows).toEqual([{ email: "admin0@clinic.example" }]);
    expect(wire.statements).toEqual([`${opening().join("; ")}; SELECT email FROM users`, "COMMIT;"]);
    expect(wire.roundTrips).toBe(2);
  });

  it("carries the opening ahead of a statement with bind parameters, and keeps that statement's row count", async () => {
    wire.reset();
    const [rows, updated] = await inScope(scopedApp, { kind: "tenant", tenantId: tenantA }, async (t) => {
      const found = await scopedApp.query<{ email: string }>("SELECT email FROM users WHERE email LIKE $1", { bind: ["admin%"], type: QueryTypes.SELECT, transaction: t });
      const [, meta] = await scopedApp.query("UPDATE users SET email = email WHERE tenant_id = $1", { bind: [tenantA], transaction: t });
      return [found, (meta as { rowCount: number }).rowCount];
    });
    expect(rows).toEqual([{ email: "admin0@clinic.example" }]);
    expect(updated).toBe(1);
    expect(wire.statements).toEqual([...opening(), "SELECT email FROM users WHERE email LIKE $1", "UPDATE users SET email = email WHERE tenant_id = $1", "COMMIT;"]);
    expect(wire.roundTrips).toBe(3);
  });

  it("sends nothing for a transaction that sends nothing, whether it commits or fails, and leaks no scope", async () => {
    wire.reset();
    expect(await inScope(scopedApp, { kind: "tenant", tenantId: tenantA }, async () => "done")).toBe("done");
    await expect(
      inScope(scopedApp, { kind: "tenant", tenantId: tenantA }, async () => {
        throw new Error("refused before any query");
      }),
    ).rejects.toThrow("refused before any query");
    expect(wire.roundTrips).toBe(0);
    expect(await select(scopedApp, "SELECT * FROM users")).toEqual([]);
    expect(await select(scopedApp, "SELECT current_setting('wardkeep.tenant_id', true) AS t")).toEqual([{ t: expect.toBeOneOf(["", null]) }]);
  });

  it("writes a transaction whose only work is held for COMMIT in one round trip: opening, held statements and COMMIT", async () => {
    wire.reset();
    await inScope(scopedApp, { kind: "tenant", tenantId: tenantA }, (t) =>
      withCommit(scopedApp, t, { text: "INSERT INTO scratch VALUES ($1)", values: [7], onError: (e) => e }),
    );
    expect(wire.statements).toEqual([...opening(), "INSERT INTO scratch VALUES ($1)", "COMMIT"]);
    expect(wire.roundTrips).toBe(1);
    expect(await owner.query("SELECT n FROM scratch WHERE n = 7", { type: QueryTypes.SELECT })).toEqual([{ n: 7 }]);
  });

  it("rolls back the work of a transaction whose held statement fails, opening included", async () => {
    const err = await inScope(scopedApp, { kind: "tenant", tenantId: tenantA }, (t) =>
      withCommit(scopedApp, t, { text: "INSERT INTO scratch VALUES ($1)", values: [500], onError: () => new Error("held insert refused") }),
    ).catch((e: Error) => e);
    expect((err as Error).message).toBe("held insert refused");
    expect(await owner.query("SELECT n FROM scratch WHERE n = 500", { type: QueryTypes.SELECT })).toEqual([]);
  });

  it("runs a single statement in a scoped transaction of its own, committed in the same round trip, prepared after its first use", async () => {
    const statement = (n: number) => ({ text: "WITH w AS (INSERT INTO scratch VALUES ($1)) SELECT email, tenant_id FROM users", values: [n] });
    wire = await recordPoolWire(scopedApp); // the test before retired the pool's connection
    wire.reset();
    expect(await singleStatementInScope(scopedApp, { kind: "tenant", tenantId: tenantA }, statement(21))).toEqual([{ email: "admin0@clinic.example", tenant_id: tenantA }]);
    expect(wire.roundTrips).toBe(1);
    expect(wire.statements).toEqual(["START TRANSACTION", expect.stringContaining("set_config('wardkeep.tenant_id', $1, true)"), statement(21).text, "COMMIT"]);
    wire.reset();
    expect(await singleStatementInScope(scopedApp, { kind: "tenant", tenantId: tenantB }, statement(22))).toEqual([{ email: "admin1@clinic.example", tenant_id: tenantB }]);
    // The scope and the statement are prepared on the connection now: only their Bind and Execute are sent.
    expect(wire.statements).toEqual(["START TRANSACTION", "COMMIT"]);
    expect(wire.roundTrips).toBe(1);
    expect(await owner.query("SELECT n FROM scratch WHERE n IN (21, 22) ORDER BY n", { type: QueryTypes.SELECT })).toEqual([{ n: 21 }, { n: 22 }]);
    // Committed, not left open: the connection is outside any transaction, with no scope.
    expect(await select(scopedApp, "SELECT current_setting('wardkeep.tenant_id', true) AS t, now() = statement_timestamp() AS fresh")).toEqual([{ t: expect.toBeOneOf(["", null]), fresh: true }]);
  });

  it("rolls a failing single statement back and returns its connection usable", async () => {
    const err = await singleStatementInScope(scopedApp, { kind: "tenant", tenantId: tenantA }, { text: "WITH w AS (INSERT INTO scratch VALUES ($1)) SELECT 1", values: [501] }).catch((e: Error) => e);
    expect(err).toMatchObject({ code: "23514", step: 2 });
    expect(await owner.query("SELECT n FROM scratch WHERE n = 501", { type: QueryTypes.SELECT })).toEqual([]);
    expect(await inScope(scopedApp, { kind: "tenant", tenantId: tenantA }, (t) => select<{ email: string }>(scopedApp, "SELECT email FROM users", t))).toEqual([{ email: "admin0@clinic.example" }]);
    await expect(singleStatementInScope(scopedApp, { kind: "tenant", tenantId: "not-a-uuid" }, { text: "SELECT 1", values: [] })).rejects.toThrow(/tenant UUID/);
  });

  it("runs nothing of a first statement whose opening fails, in either protocol, and reports the opening's error", async () => {
    const client = new pg.Client({ connectionString: db.ownerUrl });
    await client.connect();
    try {
      const w = recordWire(client);
      holdOpening(client, ["BEGIN", "SELECT 1 / 0"]);
      await expect(client.query("INSERT INTO scratch VALUES ($1)", [11])).rejects.toThrow(/division by zero/);
      await client.query("ROLLBACK");
      holdOpening(client, ["BEGIN", "SELECT 1 / 0"]);
      await expect(client.query("INSERT INTO scratch VALUES (12)")).rejects.toThrow(/division by zero/);
      await client.query("ROLLBACK");
      expect((await client.query("SELECT count(*)::int AS n FROM scratch WHERE n IN (11, 12)")).rows).toEqual([{ n: 0 }]);
      expect(w.roundTrips).toBe(5);
      // And a good opening: the statement's result is its own (no BEGIN tag, no row of the opening).
      holdOpening(client, ["BEGIN", "SELECT 42 AS answer"]);
      const r = await client.query("SELECT $1::int AS n", [5]);
      expect(r.rows).toEqual([{ n: 5 }]);
      expect(r.command).toBe("SELECT");
      await client.query("COMMIT");
    } finally {
      await client.end();
    }
  });

  it("refuses a tenant id that is not a UUID before anything reaches the database", async () => {
    expect(() => scopeStatement({ kind: "tenant", tenantId: "x', true); DROP TABLE users; --" })).toThrow(/tenant UUID/);
    wire = await recordPoolWire(scopedApp);
    wire.reset();
    await expect(inScope(scopedApp, { kind: "tenant", tenantId: "not-a-uuid" }, async () => "ran")).rejects.toThrow(/tenant UUID/);
    expect(wire.statements).toEqual([]);
  });

  it("looks up an API token in appliance scope and gives the caller's tenant scope back", async () => {
    const scopes = await inScope(scopedApp, { kind: "tenant", tenantId: tenantA }, async (t) => {
      await scopedApp.query("SELECT * FROM api_token_lookup($1)", { bind: [Buffer.alloc(32)], type: QueryTypes.SELECT, transaction: t });
      return select<{ scope: string; tenant: string; users: string }>(
        scopedApp,
        "SELECT current_setting('wardkeep.scope') AS scope, current_setting('wardkeep.tenant_id') AS tenant, (SELECT count(*) FROM users)::text AS users",
        t,
      );
    });
    expect(scopes).toEqual([{ scope: "tenant", tenant: tenantA, users: "1" }]);
    // Outside any transaction the lookup's scope ends with its own statement.
    await select(scopedApp, "SELECT * FROM api_token_lookup($1)".replace("$1", "'\\x00'::bytea"));
    expect(await select(scopedApp, "SELECT * FROM users")).toEqual([]);
  });
});
