import request from "supertest";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import type { Actor } from "../../../daemon/kernel/actor.js";
import { guardedRoutes, type GuardedRoute } from "../../../daemon/access/guard.js";
import { can, STEP_UP_ACTIONS } from "../../../daemon/kernel/policy.js";
import { callGuardedRoute } from "../../helpers/permission-matrix.js";
import { startTestAppliance, type TestAppliance } from "../../helpers/appliance.js";
import { createTenant, signIn, type SignedIn } from "../../helpers/actors.js";
import { auditEvents } from "../auth/identity-helpers.js";

/**
 * Every role against every records route, expectations generated from the policy table
 * (daemon/access/policy.ts), checked over HTTPS. Allowed requests carry placeholder ids and
 * empty bodies, so they end in 2xx, 400, 404 or 415 — anything but 401 and 403. Denied ones must
 * be 403 `forbidden` (or `step-up-required` for a step-up action without a fresh factor).
 */
const RECORDS = [
  /^\/api\/v1\/(schedule|exports|legal-holds|deletion-requests|tenant\/deletion)(\/|$)/,
  /^\/api\/v1\/patients(\/search)?$/,
  /^\/api\/v1\/patients\/:id(\/(notes|consents|attachments|legal-holds)(\/|$)|$)/,
];

let app: TestAppliance;
type Subject = { label: string; signedIn: SignedIn; actor: Actor };
const subjects: Subject[] = [];
let routes: GuardedRoute[];

beforeAll(async () => {
  app = await startTestAppliance();
  const tenant = await createTenant(app, "Matrix Records");
  for (const role of ["super_admin", "owner", "admin", "practitioner", "front_desk", "auditor", "support"] as const) {
    const s = await signIn(app, { role, tenantId: tenant.id });
    subjects.push({ label: role, signedIn: s, actor: { userId: s.user.id, role, tenantId: s.user.tenantId, via: "session", mfaVerifiedAt: new Date() } });
  }
  const owner = subjects.find((s) => s.label === "owner")!.signedIn;
  const inside = await signIn(app, { role: "support" });
  const filed = await inside.agent.post("/api/v1/support/requests").send({ tenantId: tenant.id, ticketRef: "INC-2", reason: "records matrix" });
  expect((await owner.agent.post(`/api/v1/support/requests/${filed.body.id}/approve`)).status).toBe(200);
  expect((await inside.agent.post(`/api/v1/support/requests/${filed.body.id}/enter`)).status).toBe(200);
  subjects.push({
    label: "support (approved access)",
    signedIn: inside,
    actor: { userId: owner.user.id, role: "support", tenantId: tenant.id, via: "session", impersonatorId: inside.user.id },
  });
  routes = guardedRoutes().filter((r) => RECORDS.some((re) => re.test(r.path)) && !/\/(break-glass|care-team)/.test(r.path));
});
afterAll(async () => {
  await app?.close();
});

const send = (who: SignedIn | null, route: GuardedRoute) => callGuardedRoute(app, who, route);

describe("records permission matrix", () => {
  it("covers every records route", () => {
    const paths = routes.map((r) => `${r.method} ${r.path}`);
    expect(routes.length).toBeGreaterThanOrEqual(30);
    for (const expected of [
      "get /api/v1/patients/:id",
      "post /api/v1/patients/:id/notes",
      "post /api/v1/patients/:id/notes/:itemId/sign",
      "get /api/v1/patients/:id/consents/in-force",
      "post /api/v1/patients/:id/attachments",
      "get /api/v1/patients/:id/attachments/:itemId/content",
      "get /api/v1/schedule",
      "get /api/v1/exports/tenant",
      "delete /api/v1/patients/:id",
      "post /api/v1/patients/:id/legal-holds/:itemId/release",
    ]) {
      expect(paths).toContain(expected);
    }
  });

  it("documents every records route in the OpenAPI description", async () => {
    const doc = (await request(app.baseUrl).get("/api/v1/openapi.json").ca(app.caPem)).body as { paths: Record<string, Record<string, unknown>> };
    for (const route of routes) {
      const p = route.path.replace(/:(\w+)/g, "{$1}");
      expect(doc.paths[p]?.[route.method], `${route.method} ${p}`).toBeDefined();
    }
  });

  it("answers 401 to every records route without credentials", async () => {
    for (const route of routes) expect((await send(null, route)).status, `${route.method} ${route.path}`).toBe(401);
  });

  it("allows and denies each role exactly as the policy table says, and audits each denial", async () => {
    const mismatches: string[] = [];
    let allowed = 0;
    let denied = 0;
    for (const route of routes) {
      await Promise.all(
        subjects.map(async (s) => {
          const expectAllowed = can(s.actor, route.action);
          const res = await send(s.signedIn, route);
          const deniedTypes = ["urn:wardkeep:problem:forbidden", ...(STEP_UP_ACTIONS.has(route.action) ? ["urn:wardkeep:problem:step-up-required"] : [])];
          const ok = expectAllowed ? res.status !== 401 && res.status !== 403 && res.status < 500 : res.status === 403 && deniedTypes.includes(res.body.type);
          if (!ok)
            mismatches.push(
              `${s.label} ${route.method.toUpperCase()} ${route.path} (${route.action}): expected ${expectAllowed ? "allowed" : "403"}, got ${res.status} ${res.body?.detail ?? ""}`,
            );
          if (expectAllowed) allowed++;
          else denied++;
        }),
      );
    }
    expect(mismatches).toEqual([]);
    expect(allowed).toBeGreaterThan(40);
    expect(denied).toBeGreaterThan(150);
    const denials = await auditEvents(app, { action: "access.denied" });
    expect(denials.length).toBeGreaterThanOrEqual(denied);
    expect(denials.some((e) => e.reason === "note:read" && e.actor_role === "front_desk")).toBe(true);
  });

  it("never lets auditors, admins, owners or appliance staff read clinical notes or attachments", () => {
    for (const s of subjects.filter((x) => x.label !== "practitioner")) {
      for (const action of ["note:read", "note:list", "attachment:read", "attachment:list"] as const) {
        expect(can(s.actor, action, { tenantId: s.actor.tenantId, patient: { assigned: true, breakGlass: false } }), `${s.label} ${action}`).toBe(false);
      }
    }
  });
});
