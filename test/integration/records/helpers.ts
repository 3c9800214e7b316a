import pg from "pg";
import type request from "supertest";
import { expect } from "vitest";
import type { TestAppliance } from "../../helpers/appliance.js";
import { createTenant, signIn, type SignedIn, type TenantRef } from "../../helpers/actors.js";

/** A tenant with one person per role that matters to records, signed in over HTTPS. */
export type Clinic = {
  tenant: TenantRef;
  owner: SignedIn;
  admin: SignedIn;
  frontDesk: SignedIn;
  doctor: SignedIn;
  /** A practitioner on no care team unless a test puts them there. */
  otherDoctor: SignedIn;
  auditor: SignedIn;
};

export async function openClinic(app: TestAppliance, name = "Records General"): Promise<Clinic> {
  const tenant = await createTenant(app, name);
  const [owner, admin, frontDesk, doctor, otherDoctor, auditor] = await Promise.all([
    signIn(app, { role: "owner", tenantId: tenant.id }),
    signIn(app, { role: "admin", tenantId: tenant.id }),
    signIn(app, { role: "front_desk", tenantId: tenant.id }),
    signIn(app, { role: "practitioner", tenantId: tenant.id, displayName: "Dr Grey" }),
    signIn(app, { role: "practitioner", tenantId: tenant.id }),
    signIn(app, { role: "auditor", tenantId: tenant.id }),
  ]);
  return { tenant, owner, admin, frontDesk, doctor, otherDoctor, auditor };
}

/** Registers a patient through the API as front desk; returns the created body. */
export async function registerPatient(clinic: Clinic, body: Record<string, unknown> = {}): Promise<{ id: string; version: number } & Record<string, unknown>> {
  const res = await clinic.frontDesk.agent.post("/api/v1/patients").send({ name: "Test Patient", ...body });
  expect(res.status, JSON.stringify(res.body)).toBe(201);
  return res.body;
}

export async function assignCareTeam(clinic: Clinic, patientId: string, who: SignedIn = clinic.doctor): Promise<void> {
  const res = await clinic.admin.agent.post(`/api/v1/patients/${patientId}/care-team`).send({ userId: who.user.id });
  expect(res.status, JSON.stringify(res.body)).toBe(200);
}

/** An RFC 9457 answer of this status and problem slug, with no stack trace or SQL in it. */
export function expectProblem(res: request.Response, status: number, slug?: string) {
  expect(res.status, JSON.stringify(res.body)).toBe(status);
  expect(res.headers["content-type"]).toMatch(/application\/problem\+json/);
  if (slug) expect(res.body.type).toBe(`urn:wardkeep:problem:${slug}`);
  const text = JSON.stringify(res.body);
  expect(text).not.toMatch(/\bat .+\.(ts|js):\d+|SELECT |INSERT |UPDATE |sequelize/i);
}

/** Runs SQL as the PostgreSQL superuser (sees every row, bypasses row-level security). */
export async function asSuperuser<T extends pg.QueryResultRow = Record<string, unknown>>(app: TestAppliance, sql: string, params: unknown[] = []): Promise<T[]> {
  const client = new pg.Client({ connectionString: app.db.superuserUrl });
  await client.connect();
  try {
    return (await client.query<T>(sql, params)).rows;
  } finally {
    await client.end();
  }
}
