import fs from "node:fs";
import path from "node:path";
import express from "express";
import request from "supertest";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { problemMiddleware } from "../../../daemon/http/problem.js";
import { requireUnsealed } from "../../../daemon/keys/require-unsealed.js";
import { initialiseKeyStore } from "../../../daemon/keys/seal.js";
import { createTenant, signIn, type SignedIn } from "../../helpers/actors.js";
import { startTestAppliance, tempDir, type TestAppliance } from "../../helpers/appliance.js";
import { TestClock } from "../../helpers/clock.js";
import { runCli } from "../../helpers/daemon-process.js";
import pg from "pg";

function expectProblem(res: request.Response, status: number, slug: string) {
  expect(res.status, JSON.stringify(res.body)).toBe(status);
  expect(res.headers["content-type"]).toMatch(/^application\/problem\+json/);
  expect(res.body).toMatchObject({ type: `urn:wardkeep:problem:${slug}`, status, title: expect.any(String), detail: expect.any(String) });
}

const clock = new TestClock();
let app: TestAppliance;
let shares: string[];
let admin: SignedIn;

const anonymous = () => ({
  get: (p: string) => request(app.baseUrl).get(p).ca(app.caPem),
  post: (p: string) => request(app.baseUrl).post(p).ca(app.caPem),
});

beforeAll(async () => {
  app = await startTestAppliance({ clock, env: { WARDKEEP_KEYS_UNSEAL: "shamir", WARDKEEP_KEYS_UNSEAL_ATTEMPTS_PER_MINUTE: "12" } });
});
afterAll(async () => {
  await app?.close();
});

describe("a new shamir install", () => {
  it("starts sealed and not initialised; seal-status and /readyz say so", async () => {
    const status = await anonymous().get("/api/v1/keys/seal-status").expect(200);
    expect(status.body).toMatchObject({ sealed: true, initialised: false, mode: "shamir" });
    const ready = await anonymous().get("/readyz");
    expect(ready.status).toBe(503);
    expect(ready.body.checks.keys).toMatchObject({ ok: false, detail: expect.stringMatching(/not initialised: run `wardkeep keys init --unseal shamir`/) });
    const unseal = await anonymous().post("/api/v1/keys/unseal").send({ share: "wks1-2-1-AAAA-AAAA-0000" });
    expectProblem(unseal, 409, "conflict");
  });

  it("once initialised serves, and signed-in staff can work", async () => {
    shares = (await initialiseKeyStore(app.ctx, "shamir", { shareCount: 3, threshold: 2 })).shares!;
    expect((await anonymous().get("/readyz")).status).toBe(200);
    admin = await signIn(app, { role: "super_admin" });
  });
});

describe("GET /api/v1/keys", () => {
  it("needs a signed-in actor allowed to read keys", async () => {
    expectProblem(await anonymous().get("/api/v1/keys"), 401, "unauthorized");
    const practitioner = await signIn(app, { role: "practitioner" });
    expectProblem(await practitioner.agent.get("/api/v1/keys"), 403, "forbidden");
  });

  it("shows super-admins versions, seal state and the recovery key, never key material", async () => {
    const res = await admin.agent.get("/api/v1/keys").expect(200);
    expect(res.body.seal).toMatchObject({ sealed: false, mode: "shamir", initialised: true });
    expect(res.body.kek.versions).toEqual([expect.objectContaining({ version: 1, state: "active" })]);
    expect(res.body.recovery.fingerprint).toMatch(/^[0-9a-f:]+$/);
    const text = JSON.stringify(res.body);
    expect(text).not.toContain(app.ctx.rootKey.kek(1)!.toString("hex"));
    expect(text).not.toContain(app.ctx.rootKey.kek(1)!.toString("base64"));
  });

  it("shows a tenant owner only their own tenant", async () => {
    const tenant = await createTenant(app, "Owner's clinic");
    const owner = await signIn(app, { role: "owner", tenantId: tenant.id });
    const res = await owner.agent.get("/api/v1/keys").expect(200);
    expect(Object.keys(res.body).sort()).toEqual(["kek", "rotations", "seal", "tenantRotations", "tenants"]);
    expect(res.body.tenants.every((t: { tenantId: string }) => t.tenantId === tenant.id)).toBe(true);
  });
});

describe("POST /api/v1/keys/rotate", () => {
  it("rotates the KEK for a super-admin with a fresh second factor", async () => {
    const res = await admin.agent.post("/api/v1/keys/rotate").send({ target: "kek" }).expect(202);
    expect(res.body).toEqual({ from: 1, to: 2 });
    // The rewrap starts at once in the background; the old version goes when nothing uses it.
    await expect
      .poll(async () => (await admin.agent.get("/api/v1/keys").expect(200)).body.kek.versions.map((v: { version: number }) => v.version), { timeout: 10_000 })
      .toEqual([2]);
  });

  it("asks for step-up when the second factor is not fresh", async () => {
    clock.advanceMinutes(app.config.auth.stepUpMaxAgeMinutes + 1);
    const stale = await admin.agent.post("/api/v1/keys/rotate").send({ target: "kek" });
    expect(stale.status).toBe(403);
    expect(stale.body.detail).toMatch(/fresh code/);
    await admin.stepUp();
  });

  it("lets a tenant owner rotate only their own tenant's key", async () => {
    const tenant = await createTenant(app, "Rotating clinic");
    const other = await createTenant(app, "Other clinic");
    const owner = await signIn(app, { role: "owner", tenantId: tenant.id });
    expectProblem(await owner.agent.post("/api/v1/keys/rotate").send({ target: "kek" }), 403, "forbidden");
    expectProblem(await owner.agent.post("/api/v1/keys/rotate").send({ target: "tenant", tenantId: other.id }), 403, "forbidden");
    // Nothing is encrypted for the tenant yet: the rotation has no key to give a new version.
    const empty = await owner.agent.post("/api/v1/keys/rotate").send({ target: "tenant", tenantId: tenant.id }).expect(202);
    expect(empty.body).toMatchObject({ keyId: `tenant/${tenant.id}`, resumed: false, tenantRotation: { keysTotal: 0 } });
    expectProblem(await owner.agent.post("/api/v1/keys/rotate").send({ target: "everything" }), 400, "invalid-request");
  });
});

describe("sealing and unsealing over HTTPS", () => {
  it("a super-admin seals the replica; PHI routes then answer 503 problem+json naming the state", async () => {
    const res = await admin.agent.post("/api/v1/keys/seal").send({ reason: "drill" }).expect(200);
    expect(res.body).toMatchObject({ sealed: true, reason: "sealed by an operator: drill", progress: { provided: 0, threshold: 2, shares: 3 } });
    expect((await anonymous().get("/readyz")).status).toBe(503);

    const phi = express();
    phi.get("/api/v1/patients", requireUnsealed(app.ctx), (_req, r) => void r.json([]));
    phi.use(problemMiddleware(app.ctx.log));
    const sealed = await request(phi).get("/api/v1/patients");
    expect(sealed.status).toBe(503);
    expect(sealed.headers["content-type"]).toMatch(/^application\/problem\+json/);
    expect(sealed.headers["retry-after"]).toBe("30");
    expect(sealed.body).toMatchObject({
      type: "urn:wardkeep:problem:sealed",
      sealState: "sealed",
      unsealMode: "shamir",
      detail: expect.stringMatching(/sealed by an operator: drill/),
    });
  });

  it("takes one share per call with progress, refuses a repeated or malformed share, and unseals at the threshold", async () => {
    const first = await anonymous().post("/api/v1/keys/unseal").send({ share: shares[2] }).expect(200);
    expect(first.body).toMatchObject({ sealed: true, progress: { provided: 1, threshold: 2 } });
    const again = await anonymous().post("/api/v1/keys/unseal").send({ share: shares[2] });
    expectProblem(again, 400, "invalid-request");
    expect(again.body.detail).toMatch(/already entered/);
    expectProblem(await anonymous().post("/api/v1/keys/unseal").send({ passphrase: "not a share" }), 400, "invalid-request");
    expectProblem(await anonymous().post("/api/v1/keys/unseal").send({ share: shares[0], extra: 1 }), 400, "invalid-request");
    const done = await anonymous().post("/api/v1/keys/unseal").send({ share: shares[0] }).expect(200);
    expect(done.body).toMatchObject({ sealed: false, mode: "shamir" });
    expect((await anonymous().get("/readyz")).status).toBe(200);
    expect(app.logLines.join("\n")).not.toContain(shares[0]!.slice(14, 40));
  });

  it("`wardkeep unseal` gives the running daemon one custodian share per run", async () => {
    await admin.agent.post("/api/v1/keys/seal").send({}).expect(200);
    const dir = tempDir("wardkeep-shares-");
    const caFile = path.join(dir, "ca.crt");
    fs.writeFileSync(caFile, app.caPem);
    const args = ["--json", "unseal", "--url", `https://127.0.0.1:${app.server.port}`, "--ca", caFile];
    const run = (i: number) => {
      const file = path.join(dir, `share-${i}`);
      fs.writeFileSync(file, shares[i] + "\n", { mode: 0o600 });
      return runCli([...args, "--share-file", file]);
    };
    const one = await run(1);
    expect(one.code, one.stderr).toBe(0);
    expect(JSON.parse(one.stdout)).toMatchObject({ ok: true, state: { sealed: true, progress: { provided: 1, threshold: 2 } } });
    const two = await run(0);
    expect(two.code, two.stderr).toBe(0);
    expect(JSON.parse(two.stdout)).toMatchObject({ ok: true, state: { sealed: false } });
    const status = await runCli([...args, "--status"]);
    expect(JSON.parse(status.stdout).state.sealed).toBe(false);
    fs.rmSync(dir, { recursive: true, force: true });
  });

  it("records unseal and seal in the audit trail", async () => {
    const su = new pg.Client({ connectionString: app.db.superuserUrl });
    await su.connect();
    const rows = await su
      .query<{ action: string; outcome: string }>(
        `SELECT action, outcome FROM audit_intake WHERE action LIKE 'keys.%'
         UNION ALL SELECT canonical::jsonb ->> 'action', canonical::jsonb ->> 'outcome' FROM audit_events WHERE canonical::jsonb ->> 'action' LIKE 'keys.%'`,
      )
      .then((r) => r.rows)
      .finally(() => su.end());
    const actions = rows.map((r) => `${r.action}:${r.outcome}`);
    expect(actions).toEqual(expect.arrayContaining(["keys.seal:success", "keys.unseal:success", "keys.rotate:success"]));
  });

  it("rate-limits unseal attempts from one address", async () => {
    const statuses: number[] = [];
    for (let i = 0; i < 14; i++) statuses.push((await anonymous().post("/api/v1/keys/unseal").send({ reset: true })).status);
    expect(statuses).toContain(429);
    const limited = await anonymous().post("/api/v1/keys/unseal").send({ reset: true });
    expectProblem(limited, 429, "too-many-requests");
  });
});
