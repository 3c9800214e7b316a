import { execFileSync } from "node:child_process";
import { createPublicKey } from "node:crypto";
import fs from "node:fs";
import path from "node:path";
import request from "supertest";
import { afterAll, beforeAll, describe, expect, it, vi } from "vitest";
import { createTenant, signIn, signInWithPassword, type SignedIn, type TenantRef } from "../../helpers/actors.js";
import { startTestAppliance, tempDir, testEnv, type TestAppliance } from "../../helpers/appliance.js";
import { runCli } from "../../helpers/daemon-process.js";
import { TestClock } from "../../helpers/clock.js";
import type { CampaignEvidenceRes } from "../../../daemon/access/schema.js";
import { auditEvents } from "../auth/identity-helpers.js";
import { ensureTlsMaterial } from "../../../daemon/tls/internal-ca.js";
import { freePort } from "../../helpers/postgres.js";
import { startSmtpRelay } from "../../helpers/smtp-relay.js";
import { hostOperatorIn } from "../../../daemon/kernel/actor.js";
import { SYSTEM_META } from "../../../daemon/kernel/request-meta.js";
import { createProvider, updateProvider } from "../../../daemon/sso/providers.js";
import { completeExternalSignIn } from "../../../daemon/sso/index.js";

/**
 * Access review campaigns (docs/access-reviews.md) and SCIM groups → role rules (docs/sso.md),
 * against one real appliance on a moved clock: reviewers keep or remove accounts over the API,
 * the inactive-users job deactivates what nobody reviewed by the deadline and what went unused,
 * the closed campaign's evidence is verified with openssl and the public key alone, and an API
 * token stops working after each way its creator's access ends (admin, SCIM, review).
 */

const DAY = 86_400_000;
const clock = new TestClock();
let app: TestAppliance;
let tenant: TenantRef;
let owner: SignedIn;
let admin: SignedIn;
let auditor: SignedIn;
let nurse: SignedIn;
let desk: SignedIn;
let leaver: SignedIn;
let root: SignedIn;
let scimToken: { token: string; id: string };
let scimUserId: string;
let dir: string;

beforeAll(async () => {
  app = await startTestAppliance({ clock });
  dir = tempDir("wardkeep-review-");
  tenant = await createTenant(app, "Review General", { mfaRequired: false });
  [owner, admin, auditor, nurse, desk, leaver, root] = await Promise.all([
    signIn(app, { role: "owner", tenantId: tenant.id }),
    signIn(app, { role: "admin", tenantId: tenant.id }),
    signIn(app, { role: "auditor", tenantId: tenant.id, mfa: false }),
    signIn(app, { role: "practitioner", tenantId: tenant.id, mfa: false }),
    signIn(app, { role: "front_desk", tenantId: tenant.id, mfa: false }),
    signIn(app, { role: "admin", tenantId: tenant.id }),
    signIn(app, { role: "super_admin" }),
  ]);
  const created = await owner.agent.post("/api/v1/scim-tokens").send({ name: "Entra ID", defaultRole: "practitioner" });
  expect(created.status, JSON.stringify(created.body)).toBe(201);
  scimToken = { token: created.body.token as string, id: created.body.scimToken.id as string };
}, 120_000);

afterAll(async () => {
  await app?.close();
  if (dir) fs.rmSync(dir, { recursive: true, force: true });
});

function scim(method: "get" | "post" | "patch" | "put" | "delete", p: string, body?: unknown) {
  const req = request(app.baseUrl)[method](`/scim/v2${p}`).ca(app.caPem).set("Authorization", `Bearer ${scimToken.token}`);
  return body === undefined ? req : req.set("Content-Type", "application/scim+json").send(JSON.stringify(body));
}
const scimBody = (res: request.Response) => JSON.parse(res.text) as Record<string, unknown>;
const roleOf = async (userId: string) => ((await owner.agent.get(`/api/v1/users/${userId}`)).body as { role: string; status: string }).role;

/** An API token created by `creator`, and a probe that answers its status on a patient read. */
async function tokenOf(creator: SignedIn) {
  await creator.stepUp();
  const res = await creator.agent.post("/api/v1/api-tokens").send({ name: `EHR of ${creator.user.id.slice(0, 8)}`, role: "practitioner", scopes: ["patient:read"] });
  expect(res.status, JSON.stringify(res.body)).toBe(201);
  const token = res.body.token as string;
  return async () => (await request(app.baseUrl).get("/api/v1/patients").ca(app.caPem).set("Authorization", `Bearer ${token}`)).status;
}

/** Runs a job as the super-admin (signed in again: the clock may have moved past the session's lifetime). */
async function runJob(name: string) {
  root = await signInWithPassword(app, { email: root.user.email, password: root.password, totpSecret: root.totpSecret });
  const res = await root.agent.post(`/api/v1/jobs/${name}/run`);
  expect(res.status, JSON.stringify(res.body)).toBe(202);
  await vi.waitFor(
    async () => {
      const runs = await root.agent.get(`/api/v1/jobs/${name}/runs`);
      expect(runs.body.runs.find((r: { id: string }) => r.id === res.body.run.id)).toMatchObject({ outcome: "succeeded" });
    },
    { timeout: 15_000, interval: 100 },
  );
}

describe("one way to end an account's access", () => {
  it("revokes the API tokens a person created whether an admin deactivates them or SCIM deprovisions them", async () => {
    const byAdmin = await signIn(app, { role: "admin", tenantId: tenant.id });
    const byScim = await signIn(app, { role: "admin", tenantId: tenant.id });
    const [adminProbe, scimProbe] = [await tokenOf(byAdmin), await tokenOf(byScim)];
    expect([await adminProbe(), await scimProbe()]).toEqual([200, 200]);

    await owner.stepUp();
    const deactivated = await owner.agent.patch(`/api/v1/users/${byAdmin.user.id}`).send({ status: "deactivated" });
    expect(deactivated.body).toMatchObject({ status: "deactivated" });
    expect(await adminProbe()).toBe(401);
    expect((await byAdmin.agent.get("/api/v1/auth/session")).status).toBe(401);

    // The IdP finds the local account by its email and deprovisions it.
    const found = scimBody(await scim("get", `/Users?filter=${encodeURIComponent(`userName eq "${byScim.user.email}"`)}`));
    expect(found.totalResults).toBe(1);
    const patched = await scim("patch", `/Users/${byScim.user.id}`, {
      schemas: ["urn:ietf:params:scim:api:messages:2.0:PatchOp"],
      Operations: [{ op: "replace", path: "active", value: false }],
    });
    expect(patched.status).toBe(200);
    expect(await scimProbe()).toBe(401);

    const reasons = (await auditEvents(app, { action: "user.deactivate" })).filter((e) => [byAdmin.user.id, byScim.user.id].includes(e.resource_id!));
    expect(reasons.map((e) => [e.resource_id, e.actor_user_id, e.reason])).toEqual([
      [byAdmin.user.id, owner.user.id, "administrator; sessions 1; api tokens 1"],
      [byScim.user.id, scimToken.id, "scim; sessions 1; api tokens 1"],
    ]);
  });
});

describe("SCIM groups feed the role rules", () => {
  it("gives a member the role a group rule maps its group to, takes it back when removed, and skips rules still pending approval", async () => {
    await owner.stepUp();
    const saved = await owner.agent.put("/api/v1/identity-providers/rules").send({
      rules: [
        { source: "group", match: "equals", value: "Front Office", role: "front_desk" },
        { source: "group", match: "prefix", value: "Compliance", role: "auditor" },
      ],
    });
    expect(saved.status, JSON.stringify(saved.body)).toBe(200);
    expect(saved.body.rules.map((r: { status: string }) => r.status)).toEqual(["active", "pending"]);

    const created = await scim("post", "/Users", { schemas: ["urn:ietf:params:scim:schemas:core:2.0:User"], userName: "nora.reviewed@hospital.example", active: true });
    expect(created.status).toBe(201);
    scimUserId = scimBody(created).id as string;
    expect(await roleOf(scimUserId)).toBe("practitioner"); // the token's default role

    const group = await scim("post", "/Groups", { schemas: ["urn:ietf:params:scim:schemas:core:2.0:Group"], displayName: "Front Office", members: [{ value: scimUserId }] });
    expect(group.status).toBe(201);
    const groupId = scimBody(group).id as string;
    expect(await roleOf(scimUserId)).toBe("front_desk");

    const removed = await scim("patch", `/Groups/${groupId}`, {
      schemas: ["urn:ietf:params:scim:api:messages:2.0:PatchOp"],
      Operations: [{ op: "remove", path: `members[value eq "${scimUserId}"]` }],
    });
    expect(removed.status).toBe(200);
    expect(await roleOf(scimUserId)).toBe("practitioner");

    // A privileged rule waits for a second admin: membership alone grants nothing until then.
    const compliance = await scim("post", "/Groups", {
      schemas: ["urn:ietf:params:scim:schemas:core:2.0:Group"],
      displayName: "Compliance Office",
      members: [{ value: scimUserId }],
    });
    expect(compliance.status).toBe(201);
    expect(await roleOf(scimUserId)).toBe("practitioner");
    // Back into Front Office for the review below.
    await scim("patch", `/Groups/${groupId}`, {
      schemas: ["urn:ietf:params:scim:api:messages:2.0:PatchOp"],
      Operations: [{ op: "add", path: "members", value: [{ value: scimUserId }] }],
    }).expect(200);
    expect(await roleOf(scimUserId)).toBe("front_desk");

    const changes = (await auditEvents(app, { action: "user.role.change" })).filter((e) => e.resource_id === scimUserId);
    expect(changes.map((e) => [e.actor_user_id, e.actor_role, e.reason])).toEqual([
      [scimToken.id, "scim_client", "scim group rule at position 0: practitioner -> front_desk"],
      [scimToken.id, "scim_client", "no scim group rule matches: the scim token's default role: front_desk -> practitioner"],
      [scimToken.id, "scim_client", "scim group rule at position 0: practitioner -> front_desk"],
    ]);
  });
});

describe("a saved rule edit is re-applied at once", () => {
  it("gives SCIM and just-in-time accounts the role the edited rules give them, a privileged one only after a second admin approves it; audited", async () => {
    const original = (await owner.agent.get("/api/v1/identity-providers/rules").expect(200)).body.rules as { id: string; role: string }[];
    const originalRules = [
      { source: "group", match: "equals", value: "Front Office", role: "front_desk" },
      { source: "group", match: "prefix", value: "Compliance", role: "auditor" },
    ];
    expect(original.map((r) => r.role)).toEqual(["front_desk", "auditor"]);
    // A SCIM account in a group no rule names keeps the token's default role.
    const omar = scimBody(
      await scim("post", "/Users", { schemas: ["urn:ietf:params:scim:schemas:core:2.0:User"], userName: "omar.radiology@hospital.example", active: true }).expect(201),
    ).id as string;
    await scim("post", "/Groups", { schemas: ["urn:ietf:params:scim:schemas:core:2.0:Group"], displayName: "Radiology", members: [{ value: omar }] }).expect(201);
    // A just-in-time account made at a sign-in through an IdP (the protocol's checks passed), in the same directory group.
    const host = hostOperatorIn(tenant.id);
    const idp = await createProvider(
      app.ctx,
      host,
      { kind: "saml", name: "Rules IdP", config: { idpEntityId: "https://idp.hospital.example", idpSsoUrl: "https://idp.hospital.example/sso", idpCertificates: [app.caPem] } },
      SYSTEM_META,
      app.baseUrl,
    );
    await updateProvider(app.ctx, host, idp.id, { enabled: true }, SYSTEM_META, app.baseUrl);
    const identity = {
      providerId: idp.id,
      tenantId: tenant.id,
      subject: "rita-1",
      username: "rita",
      email: "rita.radiology@hospital.example",
      groups: ["Radiology"],
      claims: {},
      authnContext: {},
    };
    await expect(completeExternalSignIn(app.ctx, identity, SYSTEM_META)).rejects.toThrow(/identity provider did not work/); // no rule admits Radiology yet
    await owner.stepUp();
    const withRadiology = [{ source: "group", match: "equals", value: "Radiology", role: "practitioner" }, ...originalRules];
    await owner.agent.put("/api/v1/identity-providers/rules").send({ rules: withRadiology }).expect(200);
    const rita = (await completeExternalSignIn(app.ctx, identity, SYSTEM_META)).userId;
    expect([await roleOf(omar), await roleOf(rita)]).toEqual(["practitioner", "practitioner"]);

    // The dry run names both; saving applies the edit to both at once, with no SCIM change or sign-in.
    const edited = [{ source: "group", match: "equals", value: "Radiology", role: "front_desk" }, ...originalRules];
    const dry = (await owner.agent.post("/api/v1/identity-providers/rules/dry-run").send({ rules: edited }).expect(200)).body.users as {
      userId: string;
      providerName: string;
      change: string;
    }[];
    expect(dry.filter((u) => [omar, rita].includes(u.userId)).map((u) => [u.userId, u.providerName, u.change])).toEqual(
      expect.arrayContaining([
        [omar, "SCIM provisioning", "role_change"],
        [rita, "Rules IdP", "role_change"],
      ]),
    );
    const saved = await owner.agent.put("/api/v1/identity-providers/rules").send({ rules: edited }).expect(200);
    expect(saved.body.reapplied).toEqual({ roleChanges: 2, accessEnded: 0 });
    expect([await roleOf(omar), await roleOf(rita), await roleOf(scimUserId)]).toEqual(["front_desk", "front_desk", "front_desk"]);
    // The role change ended her session; she signs in again as front desk.
    expect((await completeExternalSignIn(app.ctx, identity, SYSTEM_META)).role).toBe("front_desk");

    // A rule granting admin is pending: re-applying it grants nothing until a second admin approves it.
    const privileged = [{ source: "group", match: "equals", value: "Radiology", role: "admin" }, ...originalRules];
    const pending = await owner.agent.put("/api/v1/identity-providers/rules").send({ rules: privileged }).expect(200);
    expect(pending.body.rules[0]).toMatchObject({ role: "admin", status: "pending" });
    // Omar (SCIM: no active rule matches) keeps his role; Rita (no rule admits her last sign-in) keeps hers, and her sessions end.
    expect(pending.body.reapplied).toEqual({ roleChanges: 0, accessEnded: 1 });
    expect([await roleOf(omar), await roleOf(rita)]).toEqual(["front_desk", "front_desk"]);
    await admin.stepUp();
    await admin.agent.post(`/api/v1/identity-providers/rules/${pending.body.rules[0].id}/approve`).expect(200);
    expect([await roleOf(omar), await roleOf(rita)]).toEqual(["admin", "admin"]);

    const changes = (await auditEvents(app, { action: "user.role.change" })).filter((e) => [omar, rita].includes(e.resource_id!));
    expect(changes.map((e) => [e.resource_id, e.actor_user_id, e.reason])).toEqual([
      [rita, owner.user.id, "sign-in rule at position 0, re-applied when the rules changed: practitioner -> front_desk"],
      [omar, owner.user.id, "scim group rule at position 0, re-applied when the rules changed: practitioner -> front_desk"],
      [rita, admin.user.id, "sign-in rule at position 0, re-applied when the rules changed: front_desk -> admin"],
      [omar, admin.user.id, "scim group rule at position 0, re-applied when the rules changed: front_desk -> admin"],
    ]);
    const ended = (await auditEvents(app, { action: "auth.session.revoke_all" })).filter((e) => e.resource_id === rita);
    expect(ended.map((e) => [e.actor_user_id, e.reason])).toEqual([[owner.user.id, "sign-in rules changed: no rule matches the last sign-in any more; sessions 1"]]);
    const saves = (await auditEvents(app, { action: "sso.rules.save" })).map((e) => e.reason);
    expect(saves.slice(-2)).toEqual([
      "3 rules, 1 pending approval; re-applied: 2 role changes, 0 accounts without access",
      "3 rules, 2 pending approval; re-applied: 0 role changes, 1 accounts without access",
    ]);

    // Back to the table the reviews below expect; the two leave (the campaign lists active people only).
    await owner.agent.put("/api/v1/identity-providers/rules").send({ rules: originalRules }).expect(200);
    await owner.agent.patch(`/api/v1/users/${omar}`).send({ status: "deactivated" }).expect(200);
    await owner.agent.patch(`/api/v1/users/${rita}`).send({ status: "deactivated" }).expect(200);
  });
});

describe("access review campaigns", () => {
  let campaignId: string;
  let leaverProbe: () => Promise<number>;

  it("snapshots every active person with role, last sign-in, source and groups; one open campaign per tenant", async () => {
    leaverProbe = await tokenOf(leaver);
    expect(await leaverProbe()).toBe(200);
    // Accounts unused for 30 days go too (the tenant's own limit).
    await owner.stepUp();
    await owner.agent.put("/api/v1/settings/security").send({ inactiveUserDays: 30 }).expect(200);

    expect((await auditor.agent.post("/api/v1/access-reviews/campaigns").send({})).status).toBe(403);
    const started = await admin.agent.post("/api/v1/access-reviews/campaigns").send({ deadlineDays: 7 });
    expect(started.status, JSON.stringify(started.body)).toBe(201);
    campaignId = started.body.id;
    expect(started.body).toMatchObject({ status: "open", trigger: "manual", startedBy: admin.user.id, unusedDays: 30, decided: 0 });
    expect(Date.parse(started.body.deadlineAt) - Date.parse(started.body.startedAt)).toBe(7 * DAY);
    const byId = new Map(started.body.entries.map((e: { userId: string }) => [e.userId, e]));
    for (const who of [owner, admin, auditor, nurse, desk, leaver]) expect(byId.get(who.user.id)).toMatchObject({ source: "local", decision: null, email: who.user.email });
    expect(byId.get(admin.user.id)).toMatchObject({ role: "admin", mfaEnabled: true, lastLoginAt: expect.any(String), daysUnused: 0, unused: false });
    expect(byId.get(scimUserId)).toMatchObject({ source: "scim", role: "front_desk", groups: ["Compliance Office", "Front Office"], lastLoginAt: null });
    // Deactivated accounts have nothing to review; service accounts are not people.
    expect(started.body.entries.every((e: { email: string | null }) => e.email !== null)).toBe(true);
    expect(started.body.total).toBe(started.body.entries.length);

    const again = await owner.agent.post("/api/v1/access-reviews/campaigns").send({});
    expect(again.status).toBe(409);
    expect(again.body.detail).toBe(`campaign ${campaignId} is still open in this tenant; finish it first`);
    const list = await auditor.agent.get("/api/v1/access-reviews/campaigns");
    expect(list.body).toEqual([expect.objectContaining({ id: campaignId, status: "open", total: started.body.total, decided: 0 })]);
  });

  it("lets owners and admins keep or remove with a comment, never on their own account, and only owners decide on owners", async () => {
    const decide = (who: SignedIn, userId: string, decision: "keep" | "remove", comment = "still on the ward rota") =>
      who.agent.put(`/api/v1/access-reviews/campaigns/${campaignId}/entries/${userId}`).send({ decision, comment });

    const kept = await decide(admin, nurse.user.id, "keep");
    expect(kept.status, JSON.stringify(kept.body)).toBe(200);
    expect(kept.body.entries.find((e: { userId: string }) => e.userId === nurse.user.id)).toMatchObject({
      decision: "keep",
      comment: "still on the ward rota",
      decidedBy: admin.user.id,
      outcome: "kept",
    });
    expect(kept.body.decided).toBe(1);

    const own = await decide(admin, admin.user.id, "keep");
    expect(own.status).toBe(403);
    expect(own.body.detail).toBe("nobody reviews their own account; another reviewer decides on it");
    expect((await decide(admin, owner.user.id, "remove")).status).toBe(403);
    expect((await decide(auditor, desk.user.id, "keep")).status).toBe(403);
    expect((await admin.agent.put(`/api/v1/access-reviews/campaigns/${campaignId}/entries/${desk.user.id}`).send({ decision: "keep" })).status).toBe(400);

    for (const who of [admin, auditor]) expect((await decide(owner, who.user.id, "keep", "reviews the ward's access")).status).toBe(200);
    expect((await decide(owner, scimUserId, "keep", "front office, per the directory")).status).toBe(200);

    // Removal ends the account's access at once: session and the API token it created.
    const removed = await decide(owner, leaver.user.id, "remove", "moved to another trust in November");
    expect(removed.status).toBe(200);
    expect(removed.body.entries.find((e: { userId: string }) => e.userId === leaver.user.id)).toMatchObject({ decision: "remove", outcome: "removed" });
    expect((await leaver.agent.get("/api/v1/auth/session")).status).toBe(401);
    expect(await leaverProbe()).toBe(401);
    expect((await owner.agent.get(`/api/v1/users/${leaver.user.id}`)).body).toMatchObject({ status: "deactivated" });
    expect((await decide(owner, leaver.user.id, "keep")).status).toBe(409);

    // The evidence is signed once the result is final.
    const early = await auditor.agent.get(`/api/v1/access-reviews/campaigns/${campaignId}/evidence`);
    expect(early.status).toBe(409);
  });

  it("reminds the tenant's reviewers by e-mail 3 days and 1 day before the deadline, with ids and counts only, once per stage", async () => {
    const dirTls = tempDir("wardkeep-review-smtp-");
    const certs = await ensureTlsMaterial({ dir: dirTls, hostnames: ["localhost"], validityDays: 30 });
    const relay = await startSmtpRelay({ ...certs, user: "wardkeep", password: "relay-secret-1", port: await freePort() });
    try {
      await owner.stepUp();
      const channel = await owner.agent.post("/api/v1/alert-channels").send({
        type: "email",
        name: "Review desk",
        minSeverity: "warning",
        resendMinutes: 0,
        password: "relay-secret-1",
        settings: {
          host: "localhost",
          port: relay.port,
          security: "starttls",
          username: "wardkeep",
          from: "wardkeep@hospital.example",
          to: ["reviewers@hospital.example"],
          caPem: fs.readFileSync(path.join(dirTls, "ca.crt"), "utf8"),
        },
      });
      expect(channel.status, JSON.stringify(channel.body)).toBe(201);
      const open = (await owner.agent.get(`/api/v1/access-reviews/campaigns/${campaignId}`)).body as { deadlineAt: string; entries: { decision: string | null; role: string }[] };
      const undecided = open.entries.filter((e) => e.decision === null);
      const reminders = () => relay.mails.filter((m) => m.subject.includes("access_review.deadline_near"));

      // 2.5 days before the deadline: the 3-day reminder.
      clock.advance(4.5 * DAY);
      await runJob("access-review-reminders");
      await vi.waitFor(() => expect(reminders()).toHaveLength(1), { timeout: 20_000, interval: 100 });
      const first = reminders()[0]!;
      expect(first.subject).toBe(`[Wardkeep] WARNING raised: access_review.deadline_near (${campaignId}:3d)`);
      expect(first.to).toEqual(["reviewers@hospital.example"]);
      expect(first.text).toContain(
        `Access review ${campaignId} closes within 3 days (${open.deadlineAt}): ${undecided.length} accounts are not reviewed yet (${undecided.filter((e) => e.role === "owner").length} of them owners, whom only owners decide)`,
      );
      // Ids and counts only: no name or address of anyone under review.
      for (const who of [desk, nurse, owner, leaver]) expect(first.text).not.toContain(who.user.email);
      // The same stage again sends nothing; the last day's reminder is critical.
      await runJob("access-review-reminders");
      clock.advance(2 * DAY);
      await runJob("access-review-reminders");
      await vi.waitFor(() => expect(reminders()).toHaveLength(2), { timeout: 20_000, interval: 100 });
      expect(reminders()[1]!.subject).toBe(`[Wardkeep] CRITICAL raised: access_review.deadline_near (${campaignId}:1d)`);
      await new Promise((r) => setTimeout(r, 300));
      expect(reminders()).toHaveLength(2);
      await owner.agent.delete(`/api/v1/alert-channels/${channel.body.id}`);
    } finally {
      await relay.close();
      fs.rmSync(dirTls, { recursive: true, force: true });
    }
  });

  it("deactivates at the deadline every account nobody reviewed, keeps the last owner, and closes the campaign", async () => {
    clock.advance(2 * DAY); // the reminders above moved the clock 6.5 of the 7 days
    await runJob("inactive-users");
    owner = await signInWithPassword(app, { email: owner.user.email, password: owner.password, totpSecret: owner.totpSecret });
    const closed = (await owner.agent.get(`/api/v1/access-reviews/campaigns/${campaignId}`)).body;
    expect(closed).toMatchObject({ status: "closed", closedReason: "deadline", deactivatedUnreviewed: 1, removed: 1 });
    const outcome = (id: string) => closed.entries.find((e: { userId: string }) => e.userId === id).outcome;
    expect(outcome(desk.user.id)).toBe("deactivated-unreviewed");
    expect(outcome(owner.user.id)).toBe("kept-last-owner");
    expect(outcome(nurse.user.id)).toBe("kept");
    await expect(signInWithPassword(app, { email: desk.user.email, password: desk.password })).rejects.toThrow(/sign-in failed: 401/);
    const nurseAgain = await signInWithPassword(app, { email: nurse.user.email, password: nurse.password, totpSecret: nurse.totpSecret });
    expect(nurseAgain.user.id).toBe(nurse.user.id);

    const events = (await auditEvents(app, { action: "user.deactivate" })).filter((e) => e.resource_id === desk.user.id);
    expect(events).toEqual([expect.objectContaining({ actor_role: "system", reason: `access review ${campaignId}: not reviewed by the deadline; sessions 1; api tokens 0` })]);
  });

  it("exports the closed campaign as JSON and CSV under one signature that openssl verifies with the public key alone", async () => {
    auditor = await signInWithPassword(app, { email: auditor.user.email, password: auditor.password, totpSecret: auditor.totpSecret });
    const res = await auditor.agent.get(`/api/v1/access-reviews/campaigns/${campaignId}/evidence`);
    expect(res.status, JSON.stringify(res.body)).toBe(200);
    const { evidence, csv, signature, publicKeySpki, fingerprint } = res.body as CampaignEvidenceRes;
    const files = {
      json: path.join(dir, "evidence.json"),
      csv: path.join(dir, "evidence.csv"),
      sig: path.join(dir, "evidence.sig"),
      pem: path.join(dir, "public-key.pem"),
    };
    fs.writeFileSync(files.json, evidence);
    fs.writeFileSync(files.csv, csv);
    fs.writeFileSync(files.sig, Buffer.from(signature, "base64"));
    fs.writeFileSync(files.pem, createPublicKey({ key: Buffer.from(publicKeySpki, "base64"), format: "der", type: "spki" }).export({ format: "pem", type: "spki" }));
    const verify = (file: string) =>
      execFileSync("openssl", ["pkeyutl", "-verify", "-pubin", "-inkey", files.pem, "-rawin", "-in", file, "-sigfile", files.sig], { encoding: "utf8" });
    expect(verify(files.json)).toMatch(/Signature Verified Successfully/);
    const parsed = JSON.parse(evidence);
    expect(parsed.csvSha256).toBe(execFileSync("sha256sum", [files.csv], { encoding: "utf8" }).split(" ")[0]);
    // The key is the one the Audit page and `wardkeep audit fingerprint` show.
    expect((await auditor.agent.get("/api/v1/audit/public-key")).body.fingerprint).toBe(fingerprint);

    expect(parsed).toMatchObject({
      format: "wardkeep-access-review/1",
      campaignId,
      tenantId: tenant.id,
      closedReason: "deadline",
      counts: { total: 7, kept: 4, removed: 1, deactivatedUnreviewed: 1, alreadyInactive: 0, keptLastOwner: 1 },
    });
    const lines = csv.trimEnd().split("\r\n");
    expect(lines[0]).toBe(
      "user_id,email,display_name,role,source,break_glass_account,mfa_enabled,last_login_at,days_unused,unused,groups,decision,comment,decided_by,decided_at,outcome",
    );
    expect(lines.find((l) => l.startsWith(leaver.user.id))).toContain(",remove,moved to another trust in November,");
    expect(lines.find((l) => l.startsWith(scimUserId))).toContain(",scim,false,false,,");

    // A changed byte breaks the signature.
    fs.writeFileSync(files.json, evidence.replace('"removed":1', '"removed":0'));
    expect(() => verify(files.json)).toThrow();
  });

  it("deactivates accounts unused past the tenant's limit in the same job, with their sessions", async () => {
    clock.advance(31 * DAY);
    await runJob("inactive-users");
    const user = (await request(app.baseUrl).post("/api/v1/auth/login").ca(app.caPem).send({ email: admin.user.email, password: admin.password })).status;
    expect(user).toBe(401);
    const events = (await auditEvents(app, { action: "user.deactivate" })).filter((e) => e.resource_id === admin.user.id);
    expect(events).toEqual([expect.objectContaining({ actor_role: "system", reason: "inactive; sessions 1; api tokens 0" })]);
    // The last owner stays, however long unused.
    expect((await request(app.baseUrl).post("/api/v1/auth/login").ca(app.caPem).send({ email: owner.user.email, password: owner.password })).status).toBe(200);
  });
});

describe("wardkeep access-review", () => {
  it("starts, lists, shows and decides as the host operator, refuses bad input in one line, and writes evidence openssl verifies", async () => {
    const env = testEnv(app.db, app.dataDir);
    const ward = await createTenant(app, "Review Annex", { mfaRequired: false });
    const [head, temp] = await Promise.all([signIn(app, { role: "owner", tenantId: ward.id, mfa: false }), signIn(app, { role: "practitioner", tenantId: ward.id, mfa: false })]);
    const started = await runCli(["--json", "access-review", "start", "--tenant", ward.slug, "--deadline-days", "3"], env);
    expect(started.stderr).toBe("");
    const campaign = JSON.parse(started.stdout).campaign as { id: string; total: number; entries: { email: string; source: string }[] };
    expect(campaign.total).toBe(2);
    expect(campaign.entries.map((e) => [e.email, e.source]).sort()).toEqual([head.user.email, temp.user.email].sort().map((e) => [e, "local"]));

    const [list, twice, badDecision, unknownUser, early] = await Promise.all([
      runCli(["access-review", "list", "--tenant", ward.slug], env),
      runCli(["access-review", "start", "--tenant", ward.slug], env),
      runCli(["access-review", "decide", campaign.id, "--tenant", ward.slug, "--user", temp.user.email, "--decision", "maybe", "--comment", "x"], env),
      runCli(["access-review", "decide", campaign.id, "--tenant", ward.slug, "--user", "nobody@hospital.example", "--decision", "keep", "--comment", "x"], env),
      runCli(["access-review", "export", campaign.id, "--tenant", ward.slug, "--out-dir", dir], env),
    ]);
    expect(list.stdout).toMatch(new RegExp(`^${campaign.id}  open   manual   started \\d{4}-\\d\\d-\\d\\d  deadline \\d{4}-\\d\\d-\\d\\d  decided 0/2  removed 0`));
    expect([twice.code, twice.stderr]).toEqual([1, `wardkeep: campaign ${campaign.id} is still open in this tenant; finish it first\n`]);
    expect([badDecision.code, badDecision.stderr]).toEqual([1, expect.stringMatching(/^wardkeep: --decision: /)]);
    expect([unknownUser.code, unknownUser.stderr]).toEqual([
      1,
      `wardkeep: --user: nobody@hospital.example is not part of campaign ${campaign.id} (wardkeep access-review show lists its accounts)\n`,
    ]);
    expect([early.code, early.stderr]).toEqual([1, expect.stringMatching(/^wardkeep: this campaign is still open/)]);

    const kept = await runCli(["access-review", "decide", campaign.id, "--tenant", ward.slug, "--user", head.user.email, "--decision", "keep", "--comment", "runs the annex"], env);
    expect([kept.code, kept.stdout.split("\n")[0]]).toEqual([0, `${head.user.email}: keep (kept)`]);
    const removed = await runCli(
      ["access-review", "decide", campaign.id, "--tenant", ward.slug, "--user", temp.user.id, "--decision", "remove", "--comment", "locum contract ended"],
      env,
    );
    expect(removed.stdout.split("\n")[0]).toBe(`${temp.user.email}: remove (removed)`);
    expect((await temp.agent.get("/api/v1/auth/session")).status).toBe(401);
    const out = path.join(dir, "cli");
    const [shown, exported] = await Promise.all([
      runCli(["access-review", "show", campaign.id, "--tenant", ward.slug], env),
      runCli(["--json", "access-review", "export", campaign.id, "--tenant", ward.slug, "--out-dir", out], env),
    ]);
    expect(shown.stdout).toContain(`${campaign.id}  closed manual`);
    expect(shown.stdout).toMatch(
      new RegExp(`${temp.user.id}  ${temp.user.email.replace(/\./g, "\\.")} +practitioner +local +last sign-in \\d{4}-\\d\\d-\\d\\d +remove +removed$`, "m"),
    );

    expect(exported.stderr).toBe("");
    const files = JSON.parse(exported.stdout).files as Record<string, string>;
    const verified = execFileSync("openssl", ["pkeyutl", "-verify", "-pubin", "-inkey", files.publicKey!, "-rawin", "-in", files.evidence!, "-sigfile", files.signature!], {
      encoding: "utf8",
    });
    expect(verified).toMatch(/Signature Verified Successfully/);
    const evidence = JSON.parse(fs.readFileSync(files.evidence!, "utf8"));
    expect(evidence).toMatchObject({ campaignId: campaign.id, closedReason: "all-decided", counts: { total: 2, kept: 1, removed: 1 } });
    expect(evidence.csvSha256).toBe(execFileSync("sha256sum", [files.csv!], { encoding: "utf8" }).split(" ")[0]);
  }, 180_000);
});
