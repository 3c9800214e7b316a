import fs from "node:fs";
import os from "node:os";
import path from "node:path";
import request from "supertest";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { createTenant, rootSuperAdmin, signIn, type SignedIn, type TenantRef } from "../../helpers/actors.js";
import { startTestAppliance, testEnv, type TestAppliance } from "../../helpers/appliance.js";
import { runCli, type CliResult } from "../../helpers/daemon-process.js";
import { startTestIdp, type TestIdp } from "../../helpers/oidc-idp.js";
import { startSamlIdp, type SamlIdp } from "../../helpers/saml-idp.js";
import { completeExternalSignIn } from "../../../daemon/sso/index.js";
import { SYSTEM_META } from "../../../daemon/kernel/request-meta.js";
import { auditEvents } from "../auth/identity-helpers.js";

/**
 * `wardkeep idp …` and `wardkeep access …` against a running appliance's database, as the host
 * operator: providers added from the command line show on the tenant's login page once enabled,
 * `idp test` reaches a real OpenID Connect provider and reads a real SAML IdP's certificates,
 * the rules' dry run names the account whose role would change, and a just-in-time request made
 * in the API is approved here. Each CLI start costs seconds on a loaded machine, so independent
 * commands run side by side.
 */
let app: TestAppliance;
let env: Record<string, string>;
let tenant: TenantRef;
let nurse: SignedIn;
let admin: SignedIn;
let idp: TestIdp;
let saml: SamlIdp;
let dir: string;
const SLOW = 150_000;

beforeAll(async () => {
  app = await startTestAppliance();
  env = testEnv(app.db, app.dataDir, { WARDKEEP_SERVER_PUBLIC_HOSTNAME: "wardkeep.hospital.example", WARDKEEP_PORT: "8443" });
  await rootSuperAdmin(app);
  dir = fs.mkdtempSync(path.join(os.tmpdir(), "wardkeep-idp-cli-"));
  tenant = await createTenant(app, "Harbor Clinic");
  [nurse, admin, idp, saml] = await Promise.all([
    signIn(app, { role: "practitioner", tenantId: tenant.id }),
    signIn(app, { role: "admin", tenantId: tenant.id }),
    startTestIdp(),
    startSamlIdp(dir),
  ]);
  fs.writeFileSync(path.join(dir, "client-secret"), `${idp.clientSecret}\n`);
  fs.writeFileSync(path.join(dir, "bind-password"), "directory-secret\n");
  fs.writeFileSync(path.join(dir, "idp-metadata.xml"), saml.metadataXml({ withSlo: true }));
  fs.writeFileSync(path.join(dir, "idp-signing.crt"), saml.certs.current);
}, 120_000);

afterAll(async () => {
  await idp?.close();
  await saml?.stop();
  await app?.close();
  fs.rmSync(dir, { recursive: true, force: true });
});

function json(r: CliResult): Record<string, any> /* eslint-disable-line @typescript-eslint/no-explicit-any */ {
  expect(r).toMatchObject({ code: 0, stderr: "" });
  return JSON.parse(r.stdout);
}

function failed(r: CliResult, code: number, line: string) {
  expect({ code: r.code, stdout: r.stdout, stderr: r.stderr.trim() }).toEqual({ code, stdout: "", stderr: `wardkeep: ${line}` });
}

const T = () => ["--tenant", tenant.slug];

describe("wardkeep idp", () => {
  let oidcId: string;
  let samlId: string;

  it(
    "adds an OpenID Connect and a SAML provider, disabled, with the secret from a file and never printed",
    async () => {
      const [oidc, fromMetadata] = await Promise.all([
        runCli(
          [
            "--json",
            "idp",
            "add-oidc",
            ...T(),
            "--name",
            "Harbor Entra ID",
            "--issuer",
            idp.issuer,
            "--client-id",
            idp.clientId,
            "--client-secret-file",
            path.join(dir, "client-secret"),
            "--scopes",
            "openid profile email groups",
          ],
          env,
        ),
        runCli(["idp", "add-saml", ...T(), "--name", "Harbor ADFS", "--idp-metadata-file", path.join(dir, "idp-metadata.xml"), "--require-encrypted-assertions"], env),
      ]);
      const provider = json(oidc).provider as { id: string; kind: string; enabled: boolean; hasSecrets: boolean; redirectUri: string; config: Record<string, unknown> };
      expect(provider).toMatchObject({ kind: "oidc", enabled: false, hasSecrets: true, config: { issuer: idp.issuer, scopes: ["openid", "profile", "email", "groups"] } });
      expect(provider.redirectUri).toBe(`https://wardkeep.hospital.example:8443/api/v1/sso/oidc/${provider.id}/callback`);
      expect(oidc.stdout).not.toContain(idp.clientSecret);
      oidcId = provider.id;

      expect(fromMetadata.stderr).toBe("");
      const lines = fromMetadata.stdout.trim().split("\n");
      expect(lines[0]).toMatch(
        new RegExp(`^saml provider "Harbor ADFS" added \\(([0-9a-f-]{36})\\), disabled: check it with \`wardkeep idp test \\1 --tenant ${tenant.slug}\`, then enable it$`),
      );
      expect(lines[1]).toMatch(/^register at the identity provider: https:\/\/wardkeep\.hospital\.example:8443\/api\/v1\/sso\/saml\/[0-9a-f-]{36}\/acs$/);
      samlId = /\(([0-9a-f-]{36})\)/.exec(lines[0]!)![1]!;
      // The metadata's single logout URL came along, and the flag is kept.
      const stored = (await admin.agent.get(`/api/v1/identity-providers/${samlId}`).expect(200)).body.config as Record<string, unknown>;
      expect(stored).toMatchObject({ idpEntityId: saml.entityId, idpSloUrl: saml.sloUrl, requireEncryptedAssertions: true });

      const listed = await runCli(["idp", "list", ...T()], env);
      expect(listed.stdout).toMatch(new RegExp(`^${oidcId}  oidc\\s+disabled\\s+0 linked  last sign-in never\\s+Harbor Entra ID$`, "m"));
      expect(listed.stdout).toMatch(new RegExp(`^${samlId}  saml\\s+disabled\\s+0 linked  last sign-in never\\s+Harbor ADFS$`, "m"));
      const created = (await auditEvents(app, { action: "identity_provider.create" })).filter((e) => e.tenant_id === tenant.id);
      expect(created.map((e) => e.actor_role)).toEqual(["host_operator", "host_operator"]);
    },
    SLOW,
  );

  it(
    "fails in one line, saving nothing: a plain-http issuer, plain LDAP, an unreachable directory, a wrong fingerprint, no IdP settings, a plain-http single logout URL, an unknown tenant",
    async () => {
      const common = ["--bind-dn", "cn=svc,dc=harbor", "--bind-password-file", path.join(dir, "bind-password"), "--user-base", "ou=people,dc=harbor"];
      const [badIssuer, plainLdap, unreachable, wrongPin, nothing, plainSlo, unknownTenant, missingFile, badId] = await Promise.all([
        runCli(["idp", "add-oidc", ...T(), "--name", "Bad", "--issuer", "http://login.harbor.example", "--client-id", "x"], env),
        runCli(["idp", "add-ldap", ...T(), "--name", "Plain AD", "--url", "ldap://127.0.0.1:389", ...common], env),
        runCli(["idp", "add-ldap", ...T(), "--name", "Gone AD", "--url", "ldaps://127.0.0.1:1", ...common], env),
        runCli(["idp", "add-saml", ...T(), "--name", "Pinned", "--idp-metadata-file", path.join(dir, "idp-metadata.xml"), "--fingerprint", "AA:BB"], env),
        runCli(["idp", "add-saml", ...T(), "--name", "Empty"], env),
        runCli(
          [
            "idp",
            "add-saml",
            ...T(),
            "--name",
            "Plain SLO",
            "--idp-entity-id",
            saml.entityId,
            "--idp-sso-url",
            saml.ssoUrl,
            "--idp-slo-url",
            "http://idp.harbor.example/slo",
          ].concat(["--idp-certificate-file", path.join(dir, "idp-signing.crt")]),
          env,
        ),
        runCli(["idp", "list", "--tenant", "no-such-clinic"], env),
        runCli(["idp", "add-oidc", ...T(), "--name", "No file", "--issuer", idp.issuer, "--client-id", "x", "--client-secret-file", path.join(dir, "absent")], env),
        runCli(["idp", "enable", "not-an-id", ...T()], env),
      ]);
      failed(badIssuer, 1, "the provider's settings are not valid: settings.issuer: the issuer must be an https:// URL (http:// only on loopback, for a test IdP on this host)");
      failed(plainLdap, 1, "the provider's settings are not valid: settings.url: plain LDAP sends passwords in clear: use an ldaps:// URL or set startTls: true");
      expect(unreachable.code).toBe(1);
      expect(unreachable.stderr).toMatch(/^wardkeep: the directory could not be used: .+: config\.url: directory not reachable or service account refused\n$/);
      failed(wrongPin, 1, "--idp-metadata-file: no signing certificate in the metadata has the expected SHA-256 fingerprint");
      failed(nothing, 2, "give --idp-metadata-file, or --idp-entity-id, --idp-sso-url and --idp-certificate-file");
      failed(plainSlo, 1, "the provider's settings are not valid: settings.idpSloUrl: idpSloUrl must be an https:// URL");
      failed(unknownTenant, 1, "no tenant with the id or slug no-such-clinic (wardkeep tenant list shows them)");
      failed(missingFile, 1, `--client-secret-file ${path.join(dir, "absent")}: ENOENT`);
      failed(badId, 1, "<id>: not a provider id (wardkeep idp list shows them)");
      const names = ((await admin.agent.get("/api/v1/identity-providers").expect(200)).body.providers as { name: string }[]).map((p) => p.name);
      expect(names).toEqual(["Harbor ADFS", "Harbor Entra ID"]);
    },
    SLOW,
  );

  it(
    "tests a provider against the real IdP, enables it, and the login page shows its button; a stopped IdP fails the test with exit 3",
    async () => {
      const [oidcTest, samlTest, enabled] = await Promise.all([
        runCli(["idp", "test", oidcId, ...T()], env),
        runCli(["--json", "idp", "test", samlId, ...T()], env),
        runCli(["idp", "enable", oidcId, ...T()], env),
      ]);
      expect(oidcTest.stderr).toBe("");
      expect(oidcTest.stdout).toContain(`oidc provider "Harbor Entra ID": usable\n  discovery: issuer ${idp.issuer} answered\n  authorization endpoint ${idp.issuer}/auth`);
      const check = json(samlTest).check as { ok: boolean; details: string[] };
      expect(check.ok).toBe(true);
      expect(check.details[0]).toBe(`IdP ${saml.entityId} at ${saml.ssoUrl}`);
      expect(check.details[1]).toMatch(/^pinned certificate [0-9A-F:]{95} valid until \d{4}-/);
      expect(enabled.stdout.trim()).toBe('provider "Harbor Entra ID" enabled: its button shows on the login page');
      const buttons = await request(app.baseUrl).get(`/api/v1/sso/providers?tenant=${tenant.slug}`).ca(app.caPem).expect(200);
      expect(buttons.body.providers).toEqual([{ id: oidcId, name: "Harbor Entra ID", kind: "oidc", flow: "redirect", path: `/api/v1/sso/oidc/${oidcId}/start` }]);

      const disabled = await runCli(["--json", "idp", "disable", oidcId, ...T()], env);
      expect(json(disabled).provider.enabled).toBe(false);
      await idp.close();
      const unreachable = await runCli(["idp", "test", oidcId, ...T()], env);
      expect(unreachable.code).toBe(3);
      expect(unreachable.stdout).toBe("");
      expect(unreachable.stderr).toMatch(/^wardkeep: oidc provider "Harbor Entra ID" is not usable: discovery failed: .+\n$/);
    },
    SLOW,
  );

  it(
    "lists the rules with the pending one marked, and dry-runs a proposed table naming the account whose role would change",
    async () => {
      await admin.agent
        .put("/api/v1/identity-providers/rules")
        .send({
          rules: [
            { source: "group", match: "equals", value: "harbor-nurses", role: "practitioner" },
            { source: "claim", claim: "department", match: "prefix", value: "IT", role: "admin" },
          ],
        })
        .expect(200);
      // A linked account, made through the sign-in path every protocol ends in (the provider enabled again).
      await admin.agent.patch(`/api/v1/identity-providers/${oidcId}`).send({ enabled: true }).expect(200);
      await completeExternalSignIn(
        app.ctx,
        {
          providerId: oidcId,
          tenantId: tenant.id,
          subject: "s-lee",
          username: "rlee",
          email: "rowan.lee@harbor.example",
          groups: ["harbor-nurses"],
          claims: {},
          authnContext: { amr: ["pwd"] },
        },
        SYSTEM_META,
      );
      fs.writeFileSync(path.join(dir, "proposed.json"), JSON.stringify({ rules: [{ source: "group", match: "equals", value: "harbor-nurses", role: "front_desk" }] }));
      fs.writeFileSync(path.join(dir, "broken.json"), JSON.stringify({ rules: [{ source: "group", match: "equals", value: "harbor-nurses", role: "janitor" }] }));
      const [rules, dry, broken] = await Promise.all([
        runCli(["idp", "rules", ...T()], env),
        runCli(["idp", "rules", ...T(), "--dry-run-file", path.join(dir, "proposed.json")], env),
        runCli(["idp", "rules", ...T(), "--dry-run-file", path.join(dir, "broken.json")], env),
      ]);
      expect(rules.stdout).toBe('  1. group equals "harbor-nurses" -> practitioner\n  2. claim department prefix "IT" -> admin  [pending a second admin\'s approval]\n');
      expect(dry.stdout).toBe(
        "1 account under the rules (linked or provisioned by SCIM), 1 would change:\n  rowan.lee@harbor.example  practitioner -> front_desk  (role change, via Harbor Entra ID)\n",
      );
      expect(broken.code).toBe(1);
      expect(broken.stderr).toMatch(/^wardkeep: --dry-run-file: rules\.0\.role: .+\n$/);
      // Nothing was saved by the dry run.
      expect((await admin.agent.get("/api/v1/identity-providers/rules").expect(200)).body.rules[0].role).toBe("practitioner");
    },
    SLOW,
  );
});

describe("wardkeep access", () => {
  it(
    "lists a person's request for a privileged role and approves it: the role holds at once, and both are audited",
    async () => {
      const asked = await nurse.agent.post("/api/v1/privileged-access").send({ role: "admin", minutes: 30, reason: "INC-7 fix the night rota" }).expect(201);
      const id = asked.body.id as string;
      const [pending, badId, unknown] = await Promise.all([
        runCli(["--json", "access", "grants", ...T(), "--pending"], env),
        runCli(["access", "approve", "nope", ...T()], env),
        runCli(["access", "approve", "00000000-0000-4000-8000-000000000000", ...T()], env),
      ]);
      expect((json(pending).grants as { id: string; status: string; userEmail: string }[]).map((g) => [g.id, g.status, g.userEmail])).toEqual([[id, "pending", nurse.user.email]]);
      failed(badId, 1, "<id>: not a request id (wardkeep access grants shows them)");
      failed(unknown, 1, "no such privileged access request");

      const approved = await runCli(["access", "approve", id, ...T()], env);
      expect(approved.stderr).toBe("");
      const until = /^(\S+) holds admin until (\S+) \(from their next request; it ends by itself\)$/.exec(approved.stdout.trim());
      expect(until?.[1]).toBe(nurse.user.email);
      expect(Date.parse(until![2]!) - Date.now()).toBeGreaterThan(25 * 60_000);
      expect((await nurse.agent.get("/api/v1/auth/session").expect(200)).body.user.role).toBe("admin");
      const grant = (await auditEvents(app, { action: "privileged_access.grant" })).find((e) => e.resource_id === id);
      expect(grant).toMatchObject({ actor_user_id: null, actor_role: "host_operator" });

      const [again, listed] = await Promise.all([runCli(["access", "approve", id, ...T()], env), runCli(["access", "grants", ...T()], env)]);
      failed(again, 1, "this request is already approved");
      expect(listed.stdout).toMatch(
        new RegExp(`^${id}  ${nurse.user.email.replace(/[.]/g, "\\.")}\\s+practitioner -> admin for 30 min  active until \\S+  "INC-7 fix the night rota"$`, "m"),
      );

      const ended = await runCli(["access", "end", id, ...T()], env);
      expect(ended.stdout.trim()).toBe(`${nurse.user.email}'s admin access ended`);
      expect((await nurse.agent.get("/api/v1/auth/session").expect(200)).body.user.role).toBe("practitioner");
    },
    SLOW,
  );
});
