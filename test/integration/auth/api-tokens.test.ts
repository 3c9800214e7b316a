import { createHash, randomUUID } from "node:crypto";
import pg from "pg";
import request from "supertest";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import type { Actor } from "../../../daemon/kernel/actor.js";
import { forgetResolvedApiTokens, resolveApiToken } from "../../../daemon/auth/api-tokens.js";
import { requireRecentMfa } from "../../../daemon/auth/step-up.js";
import { startTestAppliance, type TestAppliance } from "../../helpers/appliance.js";
import { createTenant, signIn, type SignedIn } from "../../helpers/actors.js";
import { TestClock } from "../../helpers/clock.js";
import { createPatient } from "../../helpers/records.js";
import { auditEvents, expectProblem } from "./identity-helpers.js";

let app: TestAppliance;
const clock = new TestClock();
let admin: SignedIn;

beforeAll(async () => {
  app = await startTestAppliance({ clock });
  admin = await signIn(app, { role: "admin", tenantId: (await createTenant(app, "Lakeside Hospital")).id });
});
afterAll(async () => {
  await app?.close();
});

const bearer = (token: string) => ({
  get: (p: string) => request(app.baseUrl).get(p).ca(app.caPem).set("Authorization", `Bearer ${token}`),
  post: (p: string) => request(app.baseUrl).post(p).ca(app.caPem).set("Authorization", `Bearer ${token}`),
});

async function newToken(body: object): Promise<{ token: string; id: string; serviceAccountId: string }> {
  await admin.stepUp();
  const res = await admin.agent.post("/api/v1/api-tokens").send(body);
  expect(res.status, JSON.stringify(res.body)).toBe(201);
  return { token: res.body.token, id: res.body.apiToken.id, serviceAccountId: res.body.apiToken.serviceAccountId };
}

describe("API tokens for service accounts", () => {
  it("shows the token once, stores only its hash, and lets the service account act with it (no CSRF needed)", async () => {
    const { token, id, serviceAccountId } = await newToken({ name: "EHR interface", role: "practitioner", scopes: ["care_team:read", "break_glass:write"], expiresInDays: 30 });
    expect(token).toMatch(/^wkt_[A-Za-z0-9_-]{43}$/);
    const listed = await admin.agent.get("/api/v1/api-tokens");
    expect(listed.body.find((t: { id: string }) => t.id === id)).toMatchObject({ name: "EHR interface", role: "practitioner", prefix: token.slice(0, 10), revokedAt: null });
    expect(JSON.stringify(listed.body)).not.toContain(token);
    const c = new pg.Client({ connectionString: app.db.superuserUrl });
    await c.connect();
    const rows = await c.query<{ token_hash: Buffer }>("SELECT token_hash FROM api_tokens WHERE id = $1", [id]);
    await c.end();
    expect(rows.rows[0]!.token_hash.equals(createHash("sha256").update(token).digest())).toBe(true);

    const session = await bearer(token).get("/api/v1/auth/session");
    expect(session.body).toMatchObject({ via: "api-token", user: { id: serviceAccountId, role: "practitioner" }, scopes: ["care_team:read", "break_glass:write"] });
    // The scope admits the care-team read: an unknown patient is 404, not a scope refusal (403).
    expect((await bearer(token).get(`/api/v1/patients/${randomUUID()}/care-team`)).status).toBe(404);
    // A write without any CSRF header: bearer tokens are not sent by browsers on their own.
    const patientId = await createPatient(app, admin.user.tenantId!);
    expect((await bearer(token).post(`/api/v1/patients/${patientId}/break-glass`).send({ reason: "integration test of the bridge" })).status).toBe(201);
    // Under its break-glass grant the service account may see the patient, so its care team too.
    expect((await bearer(token).get(`/api/v1/patients/${patientId}/care-team`)).status).toBe(200);
  });

  it("limits a token to its scopes on top of its role", async () => {
    const { token } = await newToken({ name: "Read-only bridge", role: "practitioner", scopes: ["care_team:read"] });
    expectProblem(await bearer(token).post(`/api/v1/patients/${randomUUID()}/break-glass`).send({ reason: "should not be possible" }), 403, "forbidden");
    expectProblem(await bearer(token).get("/api/v1/users"), 403, "forbidden");
  });

  it("refuses administrative roles and unknown scopes for service accounts", async () => {
    await admin.stepUp();
    expectProblem(await admin.agent.post("/api/v1/api-tokens").send({ name: "x", role: "admin", scopes: ["*"] }), 400, "invalid-request");
    expectProblem(await admin.agent.post("/api/v1/api-tokens").send({ name: "x", role: "auditor", scopes: ["everything:read"] }), 400, "invalid-request");
  });

  it("needs a fresh second factor to create a token", async () => {
    clock.advanceMinutes(11);
    await admin.agent.get("/api/v1/api-tokens").expect(200); // keeps the session alive, not the step-up
    expectProblem(await admin.agent.post("/api/v1/api-tokens").send({ name: "x", role: "auditor", scopes: ["*"] }), 403, "step-up-required");
  });

  it("stops working when revoked, and its service account is deactivated", async () => {
    const { token, id, serviceAccountId } = await newToken({ name: "Old bridge", role: "front_desk", scopes: ["*"] });
    expect((await bearer(token).get("/api/v1/auth/session")).status).toBe(200);
    expect((await admin.agent.delete(`/api/v1/api-tokens/${id}`)).body.revokedAt).not.toBeNull();
    const refused = await bearer(token).get("/api/v1/auth/session");
    expectProblem(refused, 401, "unauthorized");
    expect(refused.body.reason).toBe("invalid_token");
    const account = (await admin.agent.get("/api/v1/users")).body.find((u: { id: string }) => u.id === serviceAccountId);
    expect(account).toMatchObject({ kind: "service", status: "deactivated", email: null });
    const events = await auditEvents(app, { action: "api_token.revoke" });
    expect(events.some((e) => e.resource_id === id && e.actor_user_id === admin.user.id)).toBe(true);
  });

  it("stops at once on the replica that revoked it, and on another replica as soon as PostgreSQL announces the change", async () => {
    // A second daemon on the same database and data directory (keys, TLS), like a replica.
    const replica = await startTestAppliance({ db: app.db, clock, dataDir: app.dataDir });
    try {
      expect(replica.config.auth.apiTokenCacheSeconds).toBe(2);
      const { token, id } = await newToken({ name: "Replicated bridge", role: "front_desk", scopes: ["*"] });
      const onReplica = () => request(replica.baseUrl).get("/api/v1/auth/session").ca(replica.caPem).set("Authorization", `Bearer ${token}`);
      expect((await onReplica()).status).toBe(200);
      expect((await bearer(token).get("/api/v1/auth/session")).status).toBe(200);
      await admin.agent.delete(`/api/v1/api-tokens/${id}`).expect(200);
      expect((await bearer(token).get("/api/v1/auth/session")).status).toBe(401);
      // The other replica cached its answer a moment ago (the test clock stands still, so the
      // cache time never runs out here), and drops it when the revocation's NOTIFY arrives.
      let res = await onReplica();
      for (let i = 0; res.status === 200 && i < 40; i++) {
        await new Promise((r) => setTimeout(r, 50));
        res = await onReplica();
      }
      expectProblem(res, 401, "unauthorized");
    } finally {
      await replica.close();
    }
  });

  it("looks a token up once for concurrent requests that find the cache empty, and never caches a lookup that a change overtook", async () => {
    const { token, id } = await newToken({ name: "Busy bridge", role: "front_desk", scopes: ["*"] });
    const db = app.ctx.db.app;
    const statements: string[] = [];
    db.onStatement = (text) => statements.push(text);
    const lookups = () => statements.filter((q) => q.includes("api_token_lookup")).length;
    const refreshes = () => statements.filter((q) => q.includes("SET last_used_at")).length;
    try {
      clock.advance(5_000); // past any cached answer
      const actors = await Promise.all(Array.from({ length: 12 }, () => resolveApiToken(app.ctx, token)));
      expect(actors.every((a) => a?.via === "api-token")).toBe(true);
      expect([lookups(), refreshes()]).toEqual([1, 1]);
      // Each caller gets its own copy of the actor.
      expect(new Set(actors).size).toBe(12);

      // A change commits while a lookup is in flight (its last_used_at refresh waits on a row lock here):
      // the lookup answers its own callers, but does not fill the cache for later ones.
      clock.advance(65_000);
      const su = new pg.Client({ connectionString: app.db.superuserUrl });
      await su.connect();
      try {
        await su.query("BEGIN");
        await su.query("SELECT 1 FROM api_tokens WHERE id = $1 FOR UPDATE", [id]);
        const overtaken = resolveApiToken(app.ctx, token);
        const deadline = Date.now() + 5_000;
        while (refreshes() < 2 && Date.now() < deadline) await new Promise((r) => setTimeout(r, 10));
        forgetResolvedApiTokens(app.ctx);
        await su.query("COMMIT");
        expect((await overtaken)?.via).toBe("api-token");
      } finally {
        await su.end();
      }
      const before = lookups();
      expect((await resolveApiToken(app.ctx, token))?.via).toBe("api-token");
      expect(lookups()).toBe(before + 1);
    } finally {
      db.onStatement = undefined;
    }
  });

  it("stops working when it expires", async () => {
    const { token } = await newToken({ name: "Short-lived", role: "auditor", scopes: ["*"], expiresInDays: 1 });
    expect((await bearer(token).get("/api/v1/auth/session")).status).toBe(200);
    clock.advanceMinutes(24 * 60 + 1);
    expect((await bearer(token).get("/api/v1/auth/session")).status).toBe(401);
    admin = await signIn(app, { role: "admin", tenantId: admin.user.tenantId! }); // the day also ended the admin's session
  });

  it("refuses an unknown or malformed bearer token on any route", async () => {
    for (const t of ["wkt_" + "A".repeat(43), "not-a-token", ""]) {
      const res = await request(app.baseUrl).get("/api/v1/auth/session").ca(app.caPem).set("Authorization", `Bearer ${t}`);
      expect(res.status).toBe(401);
    }
    expect((await request(app.baseUrl).get("/api/v1/users").ca(app.caPem).set("Authorization", "Basic abc")).status).toBe(401);
  });

  it("never satisfies step-up with an API token", () => {
    const tokenActor: Actor = { userId: "svc", role: "auditor", tenantId: randomUUID(), via: "api-token", scopes: ["*"], mfaVerifiedAt: clock.now() };
    expect(() => requireRecentMfa(tokenActor, app.ctx)).toThrow(/API tokens cannot/);
  });
});
