import request from "supertest";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import type { z } from "zod";
import { capabilitiesResponse, securitySettingsView, supportRequestView, tenantView, userView } from "../../daemon/access/schema.js";
import { auditSearchResponse, exportListResponse, publicKeyResponse, timelineResponse, verifyReport } from "../../daemon/audit/schema.js";
import { createdInvite, inviteView, sessionInfo, sessionView, setupStatus } from "../../daemon/auth/schema.js";
import { backupListResponse, backupPolicyView, drillRecord } from "../../daemon/backups/schema.js";
import { notReadyProblem, readinessResponse } from "../../daemon/http/schema.js";
import { keyStatusResponse, sealProgressView } from "../../daemon/keys/schema.js";
import { createTenant, signIn, type SignedIn, type TenantRef } from "../helpers/actors.js";
import { startTestAppliance, type TestAppliance } from "../helpers/appliance.js";
import { createPatient } from "../helpers/records.js";

/**
 * The admin UI's types are the daemon's response schemas (admin-ui/src/lib/api.ts). These read
 * every answer the UI uses from a real appliance and parse it with its schema, so a schema that
 * promises a field the route does not send (the UI would show nothing, or "Not ready") fails here.
 */
let app: TestAppliance;
let tenant: TenantRef;
let owner: SignedIn;
let root: SignedIn;

beforeAll(async () => {
  app = await startTestAppliance();
  tenant = await createTenant(app, "Contract Clinic");
  owner = await signIn(app, { role: "owner", tenantId: tenant.id });
  root = await signIn(app, { role: "super_admin" });
});
afterAll(async () => {
  await app?.close();
});

/** Parses with the schema and reports the first mismatch by path (a readable failure). */
function conforms<S extends z.ZodType>(schema: S, body: unknown): z.infer<S> {
  const parsed = schema.safeParse(body);
  if (!parsed.success) expect.fail(parsed.error.issues.map((i) => `${i.path.join(".") || "(root)"}: ${i.message}`).join("; "));
  return parsed.data as z.infer<S>;
}

describe("response schemas the admin UI is typed with", () => {
  it("match the health, setup, session and capability answers", async () => {
    const ready = await request(app.baseUrl).get("/readyz").ca(app.caPem).expect(200);
    expect(conforms(readinessResponse, ready.body).status).toBe("ready");
    conforms(setupStatus, (await request(app.baseUrl).get("/api/v1/setup").ca(app.caPem).expect(200)).body);
    const info = conforms(sessionInfo, (await owner.agent.get("/api/v1/auth/session").expect(200)).body);
    expect(info.idleTimeoutMinutes).toBeGreaterThan(0);
    conforms(capabilitiesResponse, (await owner.agent.get("/api/v1/access/capabilities").expect(200)).body);
    conforms(sealProgressView, (await owner.agent.get("/api/v1/keys/seal-status").expect(200)).body);
  });

  it("match the people screens' answers (users, invites, sessions, tenants, settings, support)", async () => {
    for (const u of (await owner.agent.get("/api/v1/users").expect(200)).body) conforms(userView, u);
    const created = conforms(createdInvite, (await owner.agent.post("/api/v1/invites").send({ email: "new.nurse@contract.example", role: "practitioner" }).expect(201)).body);
    for (const i of (await owner.agent.get("/api/v1/invites").expect(200)).body) conforms(inviteView, i);
    conforms(inviteView, (await owner.agent.delete(`/api/v1/invites/${created.invite.id}`).expect(200)).body);
    const sessions = (await owner.agent.get("/api/v1/sessions").expect(200)).body as unknown[];
    expect(sessions.length).toBeGreaterThan(0);
    for (const s of sessions) conforms(sessionView, s);
    for (const t of (await root.agent.get("/api/v1/tenants").expect(200)).body) conforms(tenantView, t);
    conforms(securitySettingsView, (await owner.agent.get("/api/v1/settings/security").expect(200)).body);
    const support = await signIn(app, { role: "support" });
    conforms(
      supportRequestView,
      (await support.agent.post("/api/v1/support/requests").send({ tenantId: tenant.id, ticketRef: "INC-1", reason: "contract check" }).expect(201)).body,
    );
    for (const r of (await owner.agent.get("/api/v1/support/requests").expect(200)).body) conforms(supportRequestView, r);
  });

  it("match the key, audit and backup answers", async () => {
    conforms(keyStatusResponse, (await root.agent.get("/api/v1/keys").expect(200)).body);
    conforms(keyStatusResponse, (await owner.agent.get("/api/v1/keys").expect(200)).body);

    const patientId = await createPatient(app, tenant.id);
    const search = conforms(auditSearchResponse, (await owner.agent.get("/api/v1/audit?limit=50").expect(200)).body);
    expect(search.events.length).toBeGreaterThan(0);
    const timeline = conforms(timelineResponse, (await owner.agent.get(`/api/v1/audit/patients/${patientId}/timeline`).expect(200)).body);
    expect(timeline.entries.map((e) => e.action)).toContain("patient.create");
    conforms(verifyReport, (await owner.agent.get("/api/v1/audit/verify").expect(200)).body);
    conforms(publicKeyResponse, (await owner.agent.get("/api/v1/audit/public-key").expect(200)).body);
    conforms(exportListResponse, (await owner.agent.get("/api/v1/audit/exports").expect(200)).body);

    conforms(backupListResponse, (await root.agent.get("/api/v1/backups").expect(200)).body);
    conforms(backupPolicyView, (await root.agent.get("/api/v1/backups/policy").expect(200)).body);
    const saved = conforms(
      backupPolicyView,
      (
        await root.agent
          .put("/api/v1/backups/policy")
          .send({ targets: [{ kind: "fs", name: "nas", path: "/srv/wardkeep-contract" }] })
          .expect(200)
      ).body,
    );
    expect(saved.targets).toEqual([{ kind: "fs", name: "nas", path: "/srv/wardkeep-contract", hasSecrets: false }]);
    for (const d of (await root.agent.get("/api/v1/drills").expect(200)).body) conforms(drillRecord, d);
  });

  it("match the not-ready problem the status page reads once the appliance is sealed", async () => {
    await root.agent.post("/api/v1/keys/seal").send({}).expect(200);
    const res = await request(app.baseUrl).get("/readyz").ca(app.caPem).expect(503);
    const problem = conforms(notReadyProblem, res.body);
    expect(problem.checks.keys.ok).toBe(false);
  });

  it("fails on an answer that lacks a promised field", () => {
    // The check itself: the old status page's reading (`ready`, no `status`) does not conform.
    expect(readinessResponse.safeParse({ ready: true, checks: {} }).success).toBe(false);
    expect(timelineResponse.safeParse({ patientId: "p", events: [], nextCursor: null }).success).toBe(false);
  });
});
