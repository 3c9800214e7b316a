import pg from "pg";
import request from "supertest";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import type { Role } from "../../../daemon/kernel/actor.js";
import { createTenant, signIn, type SignedIn } from "../../helpers/actors.js";
import { startTestAppliance, type TestAppliance } from "../../helpers/appliance.js";

/**
 * `GET /api/v1/access/capabilities` must agree with what the guarded routes answer, for every
 * role: the admin UI hides a screen on its word alone.
 */
const SCREEN_READS: [string, string][] = [
  ["user:list", "/api/v1/users"],
  ["session:list", "/api/v1/sessions"],
  ["security_settings:read", "/api/v1/settings/security"],
  ["support_request:list", "/api/v1/support/requests"],
  ["key:read", "/api/v1/keys/shred-schedule"],
  ["backup:read", "/api/v1/backups/policy"],
  ["audit:read", "/api/v1/audit/public-key"],
  ["audit:export", "/api/v1/audit/exports"],
  ["invite:list", "/api/v1/invites"],
];
const ROLES: Role[] = ["super_admin", "support", "owner", "admin", "practitioner", "front_desk", "auditor"];

let app: TestAppliance;
let tenantId: string;

beforeAll(async () => {
  app = await startTestAppliance();
  tenantId = (await createTenant(app, "Capabilities Clinic")).id;
});
afterAll(async () => {
  await app?.close();
});

/** Denials recorded so far, chained or not (as the database superuser: no row-level security). */
async function deniedEvents(): Promise<number> {
  const su = new pg.Client({ connectionString: app.db.superuserUrl });
  await su.connect();
  try {
    const { rows } = await su.query<{ n: string }>(
      `SELECT ((SELECT count(*) FROM audit_intake WHERE action = 'access.denied')
             + (SELECT count(*) FROM audit_events WHERE canonical LIKE '%"action":"access.denied"%'))::text AS n`,
    );
    return Number(rows[0]!.n);
  } finally {
    await su.end();
  }
}

describe("access capabilities", () => {
  it.each(ROLES)("lists for %s exactly the screen reads its routes allow, and leaves no denial behind", async (role) => {
    const person: SignedIn = await signIn(app, { role, ...(role === "super_admin" || role === "support" ? {} : { tenantId }) });
    const before = await deniedEvents();
    const res = await person.agent.get("/api/v1/access/capabilities").expect(200);
    const actions = new Set(res.body.actions as string[]);
    expect(await deniedEvents()).toBe(before);
    expect(res.body.stepUp.every((a: string) => actions.has(a))).toBe(true);
    for (const [action, path] of SCREEN_READS) {
      const status = (await person.agent.get(path)).status;
      expect({ action, allowed: status !== 403 }).toEqual({ action, allowed: actions.has(action) });
    }
  });

  it("tells an auditor apart from an admin", async () => {
    const auditor = await signIn(app, { role: "auditor", tenantId });
    const admin = await signIn(app, { role: "admin", tenantId });
    const of = async (p: SignedIn) => new Set((await p.agent.get("/api/v1/access/capabilities").expect(200)).body.actions as string[]);
    const [a, b] = [await of(auditor), await of(admin)];
    expect([a.has("audit:read"), a.has("user:list"), a.has("patient:read")]).toEqual([true, false, false]);
    expect([b.has("user:list"), b.has("invite:create")]).toEqual([true, true]);
  });

  it("answers 401 without a session", async () => {
    const res = await request(app.baseUrl).get("/api/v1/access/capabilities").ca(app.caPem);
    expect(res.status).toBe(401);
    expect(res.headers["content-type"]).toContain("application/problem+json");
  });
});
