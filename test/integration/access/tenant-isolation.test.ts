import { randomUUID } from "node:crypto";
import pg from "pg";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { inScope } from "../../../daemon/db/sql.js";
import { startTestAppliance, type TestAppliance } from "../../helpers/appliance.js";
import { createPatient } from "../../helpers/records.js";
import { createTenant, signIn, type SignedIn, type TenantRef } from "../../helpers/actors.js";
import { expectProblem } from "../auth/identity-helpers.js";

/**
 * Tenant isolation is enforced by PostgreSQL row-level security, not only by the application's
 * WHERE clauses: these tests run deliberately wrong queries (no tenant filter at all) as the app
 * role inside tenant A's scope and check that tenant B's rows never come back or change.
 */
const TENANT_TABLES = [
  "users",
  "sessions",
  "invites",
  "api_tokens",
  "mfa_recovery_codes",
  "support_requests",
  "care_team_assignments",
  "break_glass_grants",
  "admin_notifications",
] as const;

let app: TestAppliance;
type World = { tenant: TenantRef; admin: SignedIn; practitioner: SignedIn; patientId: string };
let a: World;
let b: World;

async function populate(name: string, support: SignedIn): Promise<World> {
  const tenant = await createTenant(app, name);
  await signIn(app, { role: "owner", tenantId: tenant.id });
  const admin = await signIn(app, { role: "admin", tenantId: tenant.id });
  const practitioner = await signIn(app, { role: "practitioner", tenantId: tenant.id });
  const other = await signIn(app, { role: "practitioner", tenantId: tenant.id, mfa: false });
  const patientId = await createPatient(app, tenant.id);
  expect((await admin.agent.post("/api/v1/invites").send({ email: `pending.${randomUUID()}@hospital.example`, role: "auditor" })).status).toBe(201);
  expect((await admin.agent.post("/api/v1/api-tokens").send({ name: "EHR bridge", role: "practitioner", scopes: ["*"] })).status).toBe(201);
  expect((await admin.agent.post(`/api/v1/patients/${patientId}/care-team`).send({ userId: practitioner.user.id })).status).toBe(200);
  expect((await other.agent.post(`/api/v1/patients/${patientId}/break-glass`).send({ reason: "patient in resus, no assigned clinician" })).status).toBe(201);
  expect((await support.agent.post("/api/v1/support/requests").send({ tenantId: tenant.id, ticketRef: `INC-${name.length}`, reason: "sync issue" })).status).toBe(201);
  return { tenant, admin, practitioner, patientId };
}

beforeAll(async () => {
  app = await startTestAppliance();
  const support = await signIn(app, { role: "support" });
  a = await populate("Tenant A Hospital", support);
  b = await populate("Tenant B Clinic", support);
});
afterAll(async () => {
  await app?.close();
});

describe("row-level security", () => {
  it("returns none of tenant B's rows to an unfiltered query in tenant A's scope, on every tenant table", async () => {
    await inScope(app.ctx.db.app, { kind: "tenant", tenantId: a.tenant.id }, async (t) => {
      for (const table of TENANT_TABLES) {
        const rows = await t.rows<{ tenant_id: string }>(`SELECT tenant_id FROM ${table}`);
        expect(rows.length, table).toBeGreaterThan(0);
        expect(
          rows.every((r) => r.tenant_id === a.tenant.id),
          table,
        ).toBe(true);
      }
      const tenants = await t.rows<{ id: string }>("SELECT id FROM tenants");
      expect(tenants.map((r) => r.id)).toEqual([a.tenant.id]);
    });
    // The same tables hold B's rows: the filter above was RLS, not an empty table.
    await inScope(app.ctx.db.app, { kind: "appliance" }, async (t) => {
      for (const table of TENANT_TABLES) {
        const rows = await t.rows<{ n: string }>(`SELECT count(*) AS n FROM ${table} WHERE tenant_id = $1`, [b.tenant.id]);
        expect(Number(rows[0]!.n), table).toBeGreaterThan(0);
      }
    });
  });

  it("holds on a raw SQL connection as the app role: reads, updates, deletes and inserts stay in the scope", async () => {
    const client = new pg.Client({ connectionString: app.db.appUrl });
    await client.connect();
    try {
      // No scope set at all: nothing is visible.
      expect((await client.query("SELECT * FROM users")).rowCount).toBe(0);
      expect((await client.query("SELECT * FROM sessions")).rowCount).toBe(0);

      await client.query("BEGIN");
      await client.query("SELECT set_config('wardkeep.tenant_id', $1, true), set_config('wardkeep.scope', 'tenant', true)", [a.tenant.id]);
      const users = await client.query<{ tenant_id: string }>("SELECT tenant_id FROM users");
      expect(users.rows.every((r) => r.tenant_id === a.tenant.id)).toBe(true);
      expect((await client.query("SELECT * FROM users WHERE tenant_id = $1", [b.tenant.id])).rowCount).toBe(0);
      expect((await client.query("SELECT * FROM users WHERE id = $1", [b.admin.user.id])).rowCount).toBe(0);
      // An UPDATE with no WHERE touches only A's rows.
      const updated = await client.query("UPDATE users SET display_name = 'renamed by a bad query'");
      expect(updated.rowCount).toBe(users.rowCount);
      const deleted = await client.query("DELETE FROM care_team_assignments");
      expect(deleted.rowCount).toBe(1);
      // Writing a row into B from A's scope is refused by the policy's WITH CHECK.
      await expect(
        client.query("INSERT INTO care_team_assignments (tenant_id, patient_id, user_id, assigned_by, assigned_at) VALUES ($1, $2, $3, $3, now())", [
          b.tenant.id,
          b.patientId,
          b.practitioner.user.id,
        ]),
      ).rejects.toThrow(/row-level security/);
      await client.query("ROLLBACK");

      // Claiming appliance scope needs the setting; a forged tenant id just sees an empty tenant.
      await client.query("BEGIN");
      await client.query("SELECT set_config('wardkeep.tenant_id', $1, true)", [randomUUID()]);
      expect((await client.query("SELECT * FROM users")).rowCount).toBe(0);
      await client.query("ROLLBACK");
    } finally {
      await client.end();
    }
    // B's rows were untouched by A's bad UPDATE.
    const names = await inScope(app.ctx.db.app, { kind: "tenant", tenantId: b.tenant.id }, (t) => t.rows<{ display_name: string | null }>("SELECT display_name FROM users"));
    expect(names.some((n) => n.display_name === "renamed by a bad query")).toBe(false);
  });

  it("forces row-level security on every tenant table for an app role without BYPASSRLS", async () => {
    const client = new pg.Client({ connectionString: app.db.appUrl });
    await client.connect();
    try {
      const role = await client.query<{ rolbypassrls: boolean; rolsuper: boolean }>("SELECT rolbypassrls, rolsuper FROM pg_roles WHERE rolname = current_user");
      expect(role.rows[0]).toEqual({ rolbypassrls: false, rolsuper: false });
      const tables = await client.query<{ relname: string; relrowsecurity: boolean; relforcerowsecurity: boolean }>(
        "SELECT relname, relrowsecurity, relforcerowsecurity FROM pg_class WHERE relname = ANY($1) AND relkind = 'r'",
        [[...TENANT_TABLES, "tenants"]],
      );
      expect(tables.rows).toHaveLength(TENANT_TABLES.length + 1);
      for (const t of tables.rows) expect(t, t.relname).toMatchObject({ relrowsecurity: true, relforcerowsecurity: true });
    } finally {
      await client.end();
    }
  });
});

describe("cross-tenant requests over HTTPS", () => {
  it("answers 404 when tenant A's admin reads or changes tenant B's users, sessions and tenant", async () => {
    expectProblem(await a.admin.agent.get(`/api/v1/users/${b.admin.user.id}`), 404, "not-found");
    expectProblem(await a.admin.agent.patch(`/api/v1/users/${b.practitioner.user.id}`).send({ status: "deactivated" }), 404, "not-found");
    expectProblem(await a.admin.agent.post(`/api/v1/users/${b.practitioner.user.id}/mfa/reset`), 404, "not-found");
    expectProblem(await a.admin.agent.get(`/api/v1/tenants/${b.tenant.id}`), 404, "not-found");
    expectProblem(await a.admin.agent.post("/api/v1/sessions/revoke-all").send({ userId: b.practitioner.user.id }), 404, "not-found");
    const bSessions = await b.admin.agent.get("/api/v1/sessions");
    expectProblem(await a.admin.agent.delete(`/api/v1/sessions/${bSessions.body[0].id}`), 404, "not-found");
    expect((await a.admin.agent.get(`/api/v1/sessions?userId=${b.admin.user.id}`)).body).toEqual([]);
    expectProblem(await a.admin.agent.post("/api/v1/invites").send({ email: "x@hospital.example", role: "auditor", tenantId: b.tenant.id }), 404, "not-found");
    expectProblem(await a.admin.agent.post(`/api/v1/patients/${b.patientId}/care-team`).send({ userId: b.practitioner.user.id }), 404, "not-found");
    // Lists never include the other tenant.
    const users = (await a.admin.agent.get("/api/v1/users")).body as { tenantId: string }[];
    expect(users.length).toBeGreaterThan(0);
    expect(users.every((u) => u.tenantId === a.tenant.id)).toBe(true);
    const supportRes = await a.admin.agent.get("/api/v1/support/requests");
    expect(supportRes.status, JSON.stringify(supportRes.body)).toBe(200);
    const support = supportRes.body as { tenantId: string }[];
    expect(support.every((r) => r.tenantId === a.tenant.id)).toBe(true);
    // And B is unchanged.
    expect((await b.practitioner.agent.get("/api/v1/sessions")).status).toBe(200);
  });
});
