import type request from "supertest";
import { expect } from "vitest";
import pg from "pg";
import type { TestAppliance } from "../../helpers/appliance.js";

export type AuditRow = {
  action: string;
  outcome: string;
  tenant_id: string | null;
  actor_user_id: string | null;
  actor_role: string | null;
  impersonator_id: string | null;
  break_glass: boolean;
  resource_type: string;
  resource_id: string | null;
  patient_id: string | null;
  reason: string | null;
};

/**
 * Every audit event the appliance wrote, chained (parsed from its canonical JSON) or still
 * waiting for the chainer, read as the superuser (the app role may only insert). For asserting
 * that identity events were recorded.
 */
export async function auditEvents(app: TestAppliance, filter: { action?: string } = {}): Promise<AuditRow[]> {
  const client = new pg.Client({ connectionString: app.db.superuserUrl });
  await client.connect();
  try {
    const cols = "action, outcome, tenant_id, actor_user_id, actor_role, impersonator_id, break_glass, resource_type, resource_id, patient_id, reason";
    // Both tables from one snapshot: the chainer moves events from the intake to the chain in one
    // transaction, and two separate reads could fall on either side of it and miss those events.
    await client.query("BEGIN ISOLATION LEVEL REPEATABLE READ READ ONLY");
    const chained = (await client.query<{ canonical: string }>("SELECT canonical FROM audit_events ORDER BY seq")).rows.map((r) => JSON.parse(r.canonical) as AuditRow);
    const pending = (await client.query<AuditRow>(`SELECT ${cols} FROM audit_intake ORDER BY id`)).rows;
    await client.query("COMMIT");
    return [...chained, ...pending].filter((e) => filter.action === undefined || e.action === filter.action);
  } finally {
    await client.end();
  }
}

/** An RFC 9457 problem answer of the given status and type, without stack or SQL (as in http.test.ts). */
export function expectProblem(res: request.Response, status: number, slug: string) {
  expect(res.status).toBe(status);
  expect(res.headers["content-type"]).toMatch(/^application\/problem\+json/);
  expect(res.body).toMatchObject({ type: `urn:wardkeep:problem:${slug}`, status, title: expect.any(String), detail: expect.any(String) });
  const text = JSON.stringify(res.body);
  expect(text).not.toMatch(/\bat .+\.(ts|js):\d+/);
  expect(text).not.toMatch(/\bSELECT\b|\bINSERT INTO\b|\bUPDATE \w+ SET\b|relation "|violates/);
}

export function setCookies(res: request.Response): string[] {
  const raw = res.headers["set-cookie"] as string[] | string | undefined;
  return raw === undefined ? [] : Array.isArray(raw) ? raw : [raw];
}
