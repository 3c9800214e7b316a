import request from "supertest";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import type { Actor } from "../../../daemon/kernel/actor.js";
import { guardedRoutes, type GuardedRoute } from "../../../daemon/access/guard.js";
import { can } from "../../../daemon/kernel/policy.js";
import { callGuardedRoute } from "../../helpers/permission-matrix.js";
import { startTestAppliance, type TestAppliance } from "../../helpers/appliance.js";
import { createTenant, signIn, type SignedIn } from "../../helpers/actors.js";

/**
 * Every role against every identity-and-access route, expected answers generated from the policy
 * table (daemon/access/policy.ts) and checked over HTTPS: a route that lets through a role the
 * table denies, or refuses one it allows, fails here. Allowed requests carry placeholder ids and
 * empty bodies, so they end in 200/201/204, 400 or 404 — anything but 401 and 403.
 */
const OWNED = [
  /^\/api\/v1\/(auth|sessions|invites|api-tokens|tenants|settings\/security|users|access-reviews|support|break-glass|notifications)(\/|$)/,
  /^\/api\/v1\/patients\/:id\/(break-glass|care-team)/,
];

let app: TestAppliance;
type Subject = { label: string; signedIn: SignedIn; actor: Actor };
const subjects: Subject[] = [];
let routes: GuardedRoute[];

beforeAll(async () => {
  app = await startTestAppliance();
  const tenant = await createTenant(app, "Matrix General");
  for (const role of ["super_admin", "owner", "admin", "practitioner", "front_desk", "auditor", "support"] as const) {
    const s = await signIn(app, { role, tenantId: tenant.id });
    subjects.push({ label: role, signedIn: s, actor: { userId: s.user.id, role, tenantId: s.user.tenantId, via: "session" } });
  }
  // Support inside the tenant under an approved request: a different actor with the same role.
  const owner = subjects.find((s) => s.label === "owner")!.signedIn;
  const inside = await signIn(app, { role: "support" });
  const filed = await inside.agent.post("/api/v1/support/requests").send({ tenantId: tenant.id, ticketRef: "INC-1", reason: "matrix" });
  expect(filed.status).toBe(201);
  expect((await owner.agent.post(`/api/v1/support/requests/${filed.body.id}/approve`)).status).toBe(200);
  expect((await inside.agent.post(`/api/v1/support/requests/${filed.body.id}/enter`)).status).toBe(200);
  subjects.push({
    label: "support (approved access)",
    signedIn: inside,
    actor: { userId: owner.user.id, role: "support", tenantId: tenant.id, via: "session", impersonatorId: inside.user.id },
  });
  routes = guardedRoutes().filter((r) => OWNED.some((re) => re.test(r.path)));
});
afterAll(async () => {
  await app?.close();
});

const send = (who: SignedIn | null, route: GuardedRoute) => callGuardedRoute(app, who, route);

describe("permission matrix", () => {
  it("covers every identity and access route", () => {
    expect(routes.length).toBeGreaterThanOrEqual(35);
    const paths = routes.map((r) => `${r.method} ${r.path}`);
    for (const expected of [
      "get /api/v1/users",
      "patch /api/v1/users/:id",
      "post /api/v1/invites",
      "get /api/v1/sessions",
      "put /api/v1/settings/security",
      "post /api/v1/patients/:id/break-glass",
      "post /api/v1/support/requests/:id/approve",
    ]) {
      expect(paths).toContain(expected);
    }
  });

  it("documents every route in the OpenAPI description", async () => {
    const doc = (await request(app.baseUrl).get("/api/v1/openapi.json").ca(app.caPem)).body as { paths: Record<string, Record<string, unknown>> };
    for (const route of routes) {
      const path = route.path.replace(/:(\w+)/g, "{$1}");
      expect(doc.paths[path]?.[route.method], `${route.method} ${path}`).toBeDefined();
    }
    for (const open of ["/api/v1/auth/login", "/api/v1/auth/mfa", "/api/v1/auth/session", "/api/v1/invites/accept"]) expect(doc.paths[open], open).toBeDefined();
  });

  it("answers 401 to every route without credentials", async () => {
    for (const route of routes) {
      const res = await send(null, route);
      expect(res.status, `${route.method} ${route.path}`).toBe(401);
    }
  });

  it("allows and denies each role exactly as the policy table says", async () => {
    const mismatches: string[] = [];
    let allowed = 0;
    let denied = 0;
    for (const route of routes) {
      await Promise.all(
        subjects.map(async (s) => {
          const expectAllowed = can(s.actor, route.action);
          const res = await send(s.signedIn, route);
          const ok = expectAllowed ? res.status !== 401 && res.status !== 403 : res.status === 403 && res.body.type === "urn:wardkeep:problem:forbidden";
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
    // The matrix is not trivially all-allow or all-deny.
    expect(allowed).toBeGreaterThan(40);
    expect(denied).toBeGreaterThan(100);
  });
});
