import fs from "node:fs";
import request from "supertest";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { createTenant, signIn, type SignedIn, type TenantRef } from "../../helpers/actors.js";
import { startTestAppliance, tempDir, testEnv, type TestAppliance } from "../../helpers/appliance.js";
import { runCli, spawnDaemon, type DaemonProcess } from "../../helpers/daemon-process.js";
import { createTestDatabase, type TestDatabase } from "../../helpers/postgres.js";

/**
 * SCIM 2.0 at /scim/v2 (docs/scim.md), against a real appliance and a second `wardkeep start`
 * process on the same database: the request sequences Entra ID and Okta send (fixtures in
 * test/fixtures/scim), the filter and error rules, tokens of other tenants, and deprovisioning
 * that ends the person's session and API token on both replicas at their next request although
 * each replica caches API tokens for 30 s.
 */

const CACHE_ENV = { WARDKEEP_AUTH_API_TOKEN_CACHE_SECONDS: "30", WARDKEEP_AUDIT_CHAIN_INTERVAL_MS: "100" };
const SCIM_TYPE = /^application\/scim\+json/;

let db: TestDatabase;
let dataDir: string;
let app: TestAppliance;
let replica: DaemonProcess;
let replicaUrl: string;
let tenantA: TenantRef;
let tenantB: TenantRef;
let owner: SignedIn;
let tokenA: { token: string; id: string };
let tokenB: string;

beforeAll(async () => {
  db = await createTestDatabase();
  dataDir = tempDir("wardkeep-scim-");
  app = await startTestAppliance({ db, dataDir, env: CACHE_ENV });
  replica = spawnDaemon(testEnv(db, dataDir, CACHE_ENV));
  const port = replica.port();
  tenantA = await createTenant(app, "St. Mary's SCIM");
  tenantB = await createTenant(app, "Riverside SCIM");
  // Tenant B's token comes from the host's command line, as an operator would make it (the CLI runs meanwhile).
  const cliRuns = Promise.all([
    runCli(["--json", "scim", "token", "create", "--tenant", tenantB.slug, "--name", "Okta", "--default-role", "front_desk"], {
      ...testEnv(db, dataDir, { WARDKEEP_SERVER_PUBLIC_HOSTNAME: "wardkeep.hospital.example", WARDKEEP_PORT: "8443" }),
    }),
    runCli(["scim", "token", "create", "--tenant", tenantA.slug, "--name", "x", "--default-role", "admin"], testEnv(db, dataDir)),
  ]);
  owner = await signIn(app, { role: "owner", tenantId: tenantA.id });
  await owner.stepUp();
  const created = await owner.agent.post("/api/v1/scim-tokens").send({ name: "Entra ID provisioning" });
  expect(created.status).toBe(201);
  tokenA = { token: created.body.token as string, id: created.body.scimToken.id as string };
  const [cli, refusedCli] = await cliRuns;
  expect(cli.stderr).toBe("");
  expect(cli.code).toBe(0);
  const printed = JSON.parse(cli.stdout) as { token: string; baseUrl: string; scimToken: { defaultRole: string } };
  expect(printed).toMatchObject({ ok: true, baseUrl: "https://wardkeep.hospital.example:8443/scim/v2", scimToken: { defaultRole: "front_desk", name: "Okta" } });
  tokenB = printed.token;
  // An administrative default role is refused in one line naming the option.
  expect(refusedCli.code).toBe(1);
  expect(refusedCli.stderr).toMatch(/^wardkeep: --default-role/);
  replicaUrl = `https://localhost:${await port}`;
  await replica.waitFor(/"message":"listening on/);
}, 120_000);

afterAll(async () => {
  await replica?.stop("SIGTERM").catch(() => undefined);
  await app?.close();
  fs.rmSync(dataDir, { recursive: true, force: true });
});

type Method = "get" | "post" | "put" | "patch" | "delete";
function scim(token: string | null, base = () => app.baseUrl) {
  const call = (method: Method, path: string, body?: unknown) => {
    let req = request(base())[method](`/scim/v2${path}`).ca(app.caPem);
    if (token) req = req.set("Authorization", `Bearer ${token}`);
    return body === undefined ? req : req.set("Content-Type", "application/scim+json").send(typeof body === "string" ? body : JSON.stringify(body));
  };
  return call;
}

/** Parses a scim+json answer (supertest only parses application/json by itself). */
function bodyOf(res: request.Response): Record<string, unknown> {
  return res.text ? (JSON.parse(res.text) as Record<string, unknown>) : {};
}

async function eventually<T>(probe: () => Promise<T>, accept: (v: T) => boolean, timeoutMs: number): Promise<T> {
  const deadline = Date.now() + timeoutMs;
  let last = await probe();
  while (!accept(last) && Date.now() < deadline) {
    await new Promise((r) => setTimeout(r, 50));
    last = await probe();
  }
  return last;
}

type Step = { name: string; method: string; path: string; body?: unknown; capture?: Record<string, string>; expect: { status: number; body?: unknown } };

/** Replays a provider's recorded request sequence, filling {{placeholders}} and checking each answer. */
async function replay(fixture: string, vars: Record<string, string>) {
  const steps = (JSON.parse(fs.readFileSync(new URL(`../../fixtures/scim/${fixture}`, import.meta.url), "utf8")) as { steps: Step[] }).steps;
  const fill = (text: string) => text.replace(/\{\{(\w+)\}\}/g, (_m, k: string) => vars[k] ?? `{{${k}}}`);
  for (const raw of steps) {
    const step = JSON.parse(fill(JSON.stringify(raw))) as Step;
    const res = await scim(tokenA.token)(step.method.toLowerCase() as Method, step.path, step.body);
    expect({ step: step.name, status: res.status }).toEqual({ step: step.name, status: step.expect.status });
    if (res.status !== 204) expect(res.headers["content-type"]).toMatch(SCIM_TYPE);
    const body = bodyOf(res);
    if (step.expect.body) expect(body, step.name).toMatchObject(step.expect.body as object);
    for (const [name, field] of Object.entries(step.capture ?? {})) vars[name] = String(body[field]);
  }
  return vars;
}

describe("SCIM tokens", () => {
  it("shows the SCIM base URL and the tokens by prefix, never the token itself, to admins only", async () => {
    const list = await owner.agent.get("/api/v1/scim-tokens");
    expect(list.status).toBe(200);
    expect(list.body.baseUrl).toBe(`${app.baseUrl}/scim/v2`);
    expect(list.body.tokens).toEqual([expect.objectContaining({ id: tokenA.id, name: "Entra ID provisioning", defaultRole: "practitioner", revokedAt: null })]);
    expect(tokenA.token.startsWith(list.body.tokens[0].prefix)).toBe(true);
    expect(list.text).not.toContain(tokenA.token);
    const practitioner = await signIn(app, { role: "practitioner", tenantId: tenantA.id, mfa: false });
    const refused = await practitioner.agent.get("/api/v1/scim-tokens");

    expect(refused.status).toBe(403);
    expect(refused.body.detail).toBe("your role (practitioner) may not list scim token");
  });

  it("refuses a request without a token, with an unknown one and with a revoked one, in SCIM's error format", async () => {
    const none = await scim(null)("get", "/Users");
    expect(none.status).toBe(401);
    expect(none.headers["content-type"]).toMatch(SCIM_TYPE);
    expect(none.headers["www-authenticate"]).toBe('Bearer realm="wardkeep-scim"');
    expect(bodyOf(none)).toEqual({ schemas: ["urn:ietf:params:scim:api:messages:2.0:Error"], status: "401", detail: "a valid SCIM bearer token is required" });
    expect((await scim("wkscim_not-a-real-token")("get", "/Users")).status).toBe(401);
    // A session's API token is not a SCIM token.
    expect((await scim("wkt_whatever")("get", "/Users")).status).toBe(401);

    await owner.stepUp();
    const spare = await owner.agent.post("/api/v1/scim-tokens").send({ name: "spare", defaultRole: "front_desk" });
    expect(spare.status).toBe(201);
    expect((await scim(spare.body.token)("get", "/ServiceProviderConfig")).status).toBe(200);
    const revoked = await owner.agent.delete(`/api/v1/scim-tokens/${spare.body.scimToken.id}`);
    expect(revoked.status).toBe(200);
    expect(revoked.body.revokedAt).not.toBeNull();
    expect((await scim(spare.body.token)("get", "/ServiceProviderConfig")).status).toBe(401);
    expect((await scim(spare.body.token, () => replicaUrl)("get", "/Users")).status).toBe(401);
  });
});

describe("SCIM protocol", () => {
  it("describes itself: ServiceProviderConfig, ResourceTypes and Schemas", async () => {
    const call = scim(tokenA.token);
    const config = bodyOf(await call("get", "/ServiceProviderConfig"));
    expect(config).toMatchObject({ patch: { supported: true }, bulk: { supported: false }, filter: { supported: true, maxResults: 200 }, sort: { supported: false } });
    const types = bodyOf(await call("get", "/ResourceTypes"));
    expect(types).toMatchObject({
      totalResults: 2,
      Resources: [
        { id: "User", endpoint: "/Users" },
        { id: "Group", endpoint: "/Groups" },
      ],
    });
    const schemas = bodyOf(await call("get", "/Schemas"));
    expect((schemas.Resources as { id: string }[]).map((s) => s.id)).toEqual(["urn:ietf:params:scim:schemas:core:2.0:User", "urn:ietf:params:scim:schemas:core:2.0:Group"]);
  });

  it("answers Entra ID's provisioning sequence (create, patch attributes, group members, disable, delete)", async () => {
    const vars = await replay("entra-id.json", { userName: "ada.quill@hospital.example", newEmail: "ada.quill-hart@hospital.example", groupName: "Cardiology staff" });
    // Deleted: gone from lookups too, and its account cannot sign in.
    const lookup = bodyOf(await scim(tokenA.token)("get", `/Users?filter=${encodeURIComponent('userName eq "ada.quill@hospital.example"')}`));
    expect(lookup.totalResults).toBe(0);
    const signInAttempt = await request(app.baseUrl).post("/api/v1/auth/login").ca(app.caPem).send({ email: "ada.quill-hart@hospital.example", password: "!scim-provisioned" });
    expect(signInAttempt.status).toBe(401);
    // Re-creating the userName brings the same account back (its history stays one account).
    const again = await scim(tokenA.token)("post", "/Users", { schemas: ["urn:ietf:params:scim:schemas:core:2.0:User"], userName: "ada.quill@hospital.example", active: true });
    expect(again.status).toBe(201);
    expect(bodyOf(again)).toMatchObject({ id: vars.userId, active: true, emails: [{ value: "ada.quill@hospital.example" }] });
  });

  it("answers Okta's provisioning sequence (create, PUT profile, groups, deactivate and reactivate by value object)", async () => {
    await replay("okta.json", { userName: "test.user@okta.example", groupName: "Okta Nurses" });
  });

  it("accepts only userName eq and externalId eq filters, and says so in SCIM's error format", async () => {
    const call = scim(tokenA.token);
    for (const filter of ['userName co "ada"', 'title eq "x"', 'userName eq "a" or userName eq "b"', "userName eq ada"]) {
      const res = await call("get", `/Users?filter=${encodeURIComponent(filter)}`);
      expect({ filter, status: res.status }).toEqual({ filter, status: 400 });
      expect(res.headers["content-type"]).toMatch(SCIM_TYPE);
      expect(bodyOf(res)).toEqual({
        schemas: ["urn:ietf:params:scim:api:messages:2.0:Error"],
        status: "400",
        scimType: "invalidFilter",
        detail: 'only these filters are supported: userName eq "…", externalId eq "…"',
      });
    }
    // Attribute names and the operator are case-insensitive (RFC 7644 §3.4.2.2).
    const ok = await call("get", `/Users?filter=${encodeURIComponent(`USERNAME EQ "${owner.user.email.toUpperCase()}"`)}`);
    expect(bodyOf(ok)).toMatchObject({ totalResults: 1, Resources: [{ id: owner.user.id, userName: owner.user.email }] });
  });

  it("refuses malformed bodies, patches and duplicates with the right scimType", async () => {
    const call = scim(tokenA.token);
    const badJson = await call("post", "/Users", "{not json");
    expect(bodyOf(badJson)).toMatchObject({ status: "400", scimType: "invalidSyntax" });
    const noUserName = await call("post", "/Users", { schemas: ["urn:ietf:params:scim:schemas:core:2.0:User"], emails: [{ value: "x@hospital.example" }] });
    expect(bodyOf(noUserName)).toMatchObject({ status: "400", scimType: "invalidValue", detail: "userName is required" });
    const noEmail = await call("post", "/Users", { userName: "no-address" });
    expect(bodyOf(noEmail)).toMatchObject({ status: "400", detail: "an email address is needed (emails, or a userName that is one)" });
    const duplicate = await call("post", "/Users", { userName: owner.user.email });
    expect(duplicate.status).toBe(409);
    expect(bodyOf(duplicate)).toMatchObject({ scimType: "uniqueness" });
    const badOp = await call("patch", `/Users/${owner.user.id}`, { schemas: ["urn:ietf:params:scim:api:messages:2.0:PatchOp"], Operations: [{ op: "move", path: "active" }] });
    expect(bodyOf(badOp)).toMatchObject({ status: "400", scimType: "invalidSyntax" });
    const badPath = await call("patch", `/Users/${owner.user.id}`, {
      schemas: ["urn:ietf:params:scim:api:messages:2.0:PatchOp"],
      Operations: [{ op: "replace", path: "emails[type ne 1]", value: 1 }],
    });
    expect(bodyOf(badPath)).toMatchObject({ status: "400", scimType: "invalidPath" });
    const notPatchOp = await call("patch", `/Users/${owner.user.id}`, { Operations: [{ op: "replace", path: "active", value: false }] });
    expect(bodyOf(notPatchOp)).toMatchObject({ status: "400", scimType: "invalidSyntax" });
    const missing = await call("get", "/Users/6d3c1f0e-0000-4000-8000-000000000000");
    expect(bodyOf(missing)).toEqual({ schemas: ["urn:ietf:params:scim:api:messages:2.0:Error"], status: "404", detail: "no such user" });
    // The tenant's last owner is not deprovisioned by the directory; the owner still works.
    const lastOwner = await call("patch", `/Users/${owner.user.id}`, {
      schemas: ["urn:ietf:params:scim:api:messages:2.0:PatchOp"],
      Operations: [{ op: "replace", path: "active", value: false }],
    });
    expect(lastOwner.status).toBe(409);
    expect(bodyOf(lastOwner)).toMatchObject({ scimType: "mutability", detail: "a tenant needs at least one active owner" });
    expect((await owner.agent.get("/api/v1/auth/session")).status).toBe(200);
  });

  it("gives accounts created through a token that token's default role", async () => {
    const created = await scim(tokenB)("post", "/Users", { userName: "desk.clerk@riverside.example" });
    expect(created.status).toBe(201);
    const id = bodyOf(created).id as string;
    const riversideOwner = await signIn(app, { role: "owner", tenantId: tenantB.id });
    const users = await riversideOwner.agent.get("/api/v1/users");
    expect(users.body.find((u: { id: string }) => u.id === id)).toMatchObject({ email: "desk.clerk@riverside.example", role: "front_desk", status: "active" });
  });

  it("keeps another tenant's token away from this tenant's accounts", async () => {
    const other = scim(tokenB);
    const read = await other("get", `/Users/${owner.user.id}`);
    expect(read.status).toBe(404);
    const patch = await other("patch", `/Users/${owner.user.id}`, {
      schemas: ["urn:ietf:params:scim:api:messages:2.0:PatchOp"],
      Operations: [{ op: "replace", path: "displayName", value: "Hijacked" }],
    });
    expect(patch.status).toBe(404);
    expect((await other("delete", `/Users/${owner.user.id}`)).status).toBe(404);
    const lookup = bodyOf(await other("get", `/Users?filter=${encodeURIComponent(`userName eq "${owner.user.email}"`)}`));
    expect(lookup).toMatchObject({ totalResults: 0, Resources: [] });
    const mine = bodyOf(await scim(tokenA.token)("get", `/Users/${owner.user.id}`));
    expect(mine).toMatchObject({ id: owner.user.id, active: true });
    expect(mine.displayName).not.toBe("Hijacked");
  });
});

describe("deprovisioning", () => {
  it("ends the person's session and API token at their next request on both replicas, audited with the SCIM client as actor", async () => {
    const leaver = await signIn(app, { role: "admin", tenantId: tenantA.id });
    await leaver.stepUp();
    const created = await leaver.agent.post("/api/v1/api-tokens").send({ name: "Lab interface", role: "front_desk", scopes: ["*"] });
    expect(created.status).toBe(201);
    const bearer = { Authorization: `Bearer ${created.body.token as string}` };
    const at = (base: string, path: string, headers: Record<string, string>) => request(base).get(path).ca(app.caPem).set(headers);
    // Both replicas know the session and have resolved (and cached for 30 s) the token.
    for (const base of [app.baseUrl, replicaUrl]) {
      expect((await at(base, "/api/v1/auth/session", leaver.headers)).status).toBe(200);
      expect((await at(base, "/api/v1/patients", bearer)).status).toBe(200);
    }

    // The IdP finds the local account by its address and disables it, as Entra ID does.
    const found = bodyOf(await scim(tokenA.token)("get", `/Users?filter=${encodeURIComponent(`userName eq "${leaver.user.email}"`)}`));
    expect(found).toMatchObject({ totalResults: 1, Resources: [{ id: leaver.user.id, active: true }] });
    const disabled = await scim(tokenA.token, () => replicaUrl)("patch", `/Users/${leaver.user.id}`, {
      schemas: ["urn:ietf:params:scim:api:messages:2.0:PatchOp"],
      Operations: [{ op: "Replace", path: "active", value: false }],
    });
    expect(disabled.status).toBe(200);
    expect(bodyOf(disabled)).toMatchObject({ active: false });

    const ended = await at(app.baseUrl, "/api/v1/auth/session", leaver.headers);
    expect(ended.status).toBe(401);
    expect(ended.body.detail).toBe("your session was ended; sign in again");
    expect((await at(replicaUrl, "/api/v1/auth/session", leaver.headers)).status).toBe(401);
    const refused = await at(app.baseUrl, "/api/v1/patients", bearer);
    expect(refused.status).toBe(401);
    expect(refused.body.detail).toBe("the API token is invalid, expired or revoked");
    // The other process drops its cached answer when PostgreSQL's notification arrives (well under its 30 s cache).
    const started = Date.now();
    const onReplica = await eventually(
      () => at(replicaUrl, "/api/v1/patients", bearer),
      (r) => r.status === 401,
      3_000,
    );
    expect(onReplica.status).toBe(401);
    expect(Date.now() - started).toBeLessThan(3_000);

    const tokens = await owner.agent.get("/api/v1/api-tokens");
    expect(tokens.body.find((t: { id: string }) => t.id === created.body.apiToken.id).revokedAt).not.toBeNull();
    const users = await owner.agent.get("/api/v1/users");
    expect(users.body.find((u: { id: string }) => u.id === leaver.user.id)).toMatchObject({ status: "deactivated" });

    const audit = await eventually(
      () => owner.agent.get(`/api/v1/audit?actor=${tokenA.id}&action=user.deactivate`),
      (r) => r.status === 200 && r.body.events.some((e: { resourceId: string }) => e.resourceId === leaver.user.id),
      5_000,
    );
    const event = audit.body.events.find((e: { resourceId: string }) => e.resourceId === leaver.user.id);
    expect(event).toMatchObject({ actor: { userId: tokenA.id, role: "scim_client" }, resourceType: "user", outcome: "success", reason: "scim; sessions 1; api tokens 1" });
    expect(JSON.stringify(audit.body)).not.toContain(leaver.user.email);
  });
});
