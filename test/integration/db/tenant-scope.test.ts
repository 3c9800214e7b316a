import { QueryTypes, Sequelize } from "sequelize";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { applyMigrations, knownMigrations, pendingMigrations } from "../../../daemon/db/migrate.js";
import { inScope, scopedTransactions, scopeStatement } from "../../../daemon/db/tenant-scope.js";
import { APP_ROLE } from "../../../daemon/db/roles.js";
import { createTestDatabase, type TestDatabase } from "../../helpers/postgres.js";

let db: TestDatabase;
let owner: Sequelize;
let app: Sequelize;
/** As the daemon opens it (daemon/db/connection.ts): the scope travels with START TRANSACTION. */
let scopedApp: Sequelize;
const statements: string[] = [];
let tenantA: string;
let tenantB: string;

const select = <T extends object>(s: Sequelize, sql: string, transaction?: import("sequelize").Transaction) =>
  s.query<T>(sql, { type: QueryTypes.SELECT, transaction });

beforeAll(async () => {
  db = await createTestDatabase();
  owner = new Sequelize(db.ownerUrl, { logging: false });
  // One connection, so a scope that leaked past its transaction would show up in the next query.
  app = new Sequelize(db.appUrl, { logging: false, pool: { max: 1 } });
  scopedApp = scopedTransactions(new Sequelize(db.appUrl, { logging: (sql) => statements.push(sql), pool: { max: 1 } }));
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
});

afterAll(async () => {
  await app?.close();
  await scopedApp?.close();
  await owner?.close();
  await db?.drop();
});

describe.each([
  ["a plain pool (scope in its own statement)", () => app],
  ["the daemon's pool (scope sent with START TRANSACTION)", () => scopedApp],
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
  it("opens a daemon transaction and sets its scope in one round trip, and commits the work", async () => {
    statements.length = 0;
    await inScope(scopedApp, { kind: "tenant", tenantId: tenantA }, (t) => select(scopedApp, "SELECT 1 FROM users", t));
    expect(statements.map((s) => s.replace(/^Executing \([^)]*\): /, ""))).toEqual([
      `START TRANSACTION; SELECT set_config('wardkeep.tenant_id', '${tenantA}', true), set_config('wardkeep.scope', 'tenant', true)`,
      "SELECT 1 FROM users",
      "COMMIT;",
    ]);
  });

  it("refuses a tenant id that is not a UUID before anything reaches the database", async () => {
    expect(() => scopeStatement({ kind: "tenant", tenantId: "x', true); DROP TABLE users; --" })).toThrow(/tenant UUID/);
    statements.length = 0;
    await expect(inScope(scopedApp, { kind: "tenant", tenantId: "not-a-uuid" }, async () => "ran")).rejects.toThrow(/tenant UUID/);
    expect(statements).toEqual([]);
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
