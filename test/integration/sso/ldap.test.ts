import fs from "node:fs";
import request from "supertest";
import type { Browser } from "playwright-core";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { hostOperatorIn, type Actor } from "../../../daemon/kernel/actor.js";
import { SYSTEM_META } from "../../../daemon/kernel/request-meta.js";
import { createProvider, updateProvider } from "../../../daemon/sso/providers.js";
import { approveRule, saveRules } from "../../../daemon/sso/rules.js";
import { reconcileLdapProviders } from "../../../daemon/sso/ldap/reconcile.js";
import { createTenant, signIn } from "../../helpers/actors.js";
import { startTestAppliance, type TestAppliance } from "../../helpers/appliance.js";
import { ensureAdminUiBuilt, launchBrowser, watchForViolations } from "../../helpers/browser.js";
import { auditEvents } from "../auth/identity-helpers.js";
import { ldapProviderConfig, type LdapProviderConfig } from "../../../daemon/sso/ldap/config.js";
import { authenticateLdap, directoryStatus, escapeFilterValue, guidToBytes, guidToText, probeDirectory } from "../../../daemon/sso/ldap/directory.js";
import { tempDir } from "../../helpers/appliance.js";
import { startSlapd, type Slapd } from "../../helpers/slapd.js";

/**
 * LDAP / Active Directory sign-in against Debian's slapd, started once for the file with a seeded
 * directory: users, groups nested three deep, a group cycle, an AD-disabled account
 * (userAccountControl 514) and an OpenLDAP-locked one (pwdAccountLockedTime), over StartTLS and
 * ldaps:// with a test CA.
 */
const SUFFIX = "dc=example,dc=org";
const SERVICE_DN = `cn=wardkeep-svc,ou=service,${SUFFIX}`;
const SERVICE_PASSWORD = "svc-password-test";
const u = (uid: string) => `uid=${uid},ou=people,${SUFFIX}`;
const g = (cn: string) => `cn=${cn},ou=groups,${SUFFIX}`;
/** AD objectGUIDs: 16 bytes each, distinct per user. */
const guid = (n: number) => Buffer.from(Array.from({ length: 16 }, (_, i) => (n * 17 + i) & 0xff));

function person(uid: string, n: number, extra: string[] = []): string {
  return [
    `dn: ${u(uid)}`,
    "objectClass: inetOrgPerson",
    "objectClass: wardkeepTestAdUser",
    `uid: ${uid}`,
    `sAMAccountName: ${uid}`,
    `cn: ${uid[0]!.toUpperCase()}${uid.slice(1)} Tester`,
    "sn: Tester",
    `mail: ${uid}@hospital.example`,
    `userPassword: ${uid}-Directory-pw1`,
    `objectGUID:: ${guid(n).toString("base64")}`,
    "userAccountControl: 512",
    ...extra,
    "",
  ].join("\n");
}

function group(cn: string, members: string[]): string {
  return [`dn: ${g(cn)}`, "objectClass: groupOfNames", `cn: ${cn}`, ...members.map((m) => `member: ${m}`), ""].join("\n");
}

const SEED = [
  [`dn: ${SUFFIX}`, "objectClass: dcObject", "objectClass: organization", "o: Example Hospital", "dc: example", ""].join("\n"),
  ...["people", "groups", "service"].map((ou) => [`dn: ou=${ou},${SUFFIX}`, "objectClass: organizationalUnit", `ou: ${ou}`, ""].join("\n")),
  [`dn: ${SERVICE_DN}`, "objectClass: organizationalRole", "objectClass: simpleSecurityObject", "cn: wardkeep-svc", `userPassword: ${SERVICE_PASSWORD}`, ""].join("\n"),
  person("alice", 1),
  person("bob", 2).replace("userAccountControl: 512", "userAccountControl: 514"),
  person("carol", 3),
  person("dave", 4, ["pwdAccountLockedTime: 20260101000000Z"]),
  person("erin", 5),
  // alice ∈ ward-3-nurses ∈ nursing ∈ clinical-staff: only the top group maps to a role.
  group("ward-3-nurses", [u("alice")]),
  group("nursing", [g("ward-3-nurses")]),
  group("clinical-staff", [g("nursing")]),
  // erin ∈ it-ops ∈ wardkeep-admins
  group("it-ops", [u("erin")]),
  group("wardkeep-admins", [g("it-ops")]),
  // carol ∈ loop-a; loop-a ∈ loop-b ∈ loop-a (a cycle the walk must end)
  group("loop-a", [u("carol"), g("loop-b")]),
  group("loop-b", [g("loop-a")]),
].join("\n");

let dir: string;
let slapd: Slapd;
let app: TestAppliance;
let browser: Browser;
let openldap: LdapProviderConfig;
let ad: LdapProviderConfig;
const secrets = { bindPassword: SERVICE_PASSWORD };

beforeAll(async () => {
  dir = tempDir("wardkeep-slapd-");
  slapd = await startSlapd(dir, { suffix: SUFFIX, rootPassword: "root-password-test", ldif: SEED });
  const common = { bindDn: SERVICE_DN, userBase: `ou=people,${SUFFIX}`, groupBase: `ou=groups,${SUFFIX}`, caPem: slapd.caPem };
  openldap = ldapProviderConfig.parse({ ...common, url: slapd.ldapUrl, startTls: true, flavor: "openldap" });
  ad = ldapProviderConfig.parse({ ...common, url: slapd.ldapsUrl, flavor: "ad" });
});
afterAll(async () => {
  await browser?.close();
  await app?.close();
  await slapd?.stop();
  if (dir) fs.rmSync(dir, { recursive: true, force: true });
});

describe("LDAP provider settings", () => {
  it("refuses plain LDAP with one readable line, and accepts ldaps:// or ldap:// with StartTLS", () => {
    const plain = ldapProviderConfig.safeParse({ url: "ldap://dc1.hospital.example", bindDn: SERVICE_DN, userBase: SUFFIX });
    expect(plain.success).toBe(false);
    expect(plain.error?.issues.map((i) => `${i.path.join(".")}: ${i.message}`)).toEqual(["url: plain LDAP sends passwords in clear: use an ldaps:// URL or set startTls: true"]);
    expect(ldapProviderConfig.safeParse({ url: "ldaps://dc1.hospital.example", startTls: true, bindDn: SERVICE_DN, userBase: SUFFIX }).error?.issues[0]?.message).toBe(
      "startTls is for ldap:// URLs; an ldaps:// connection is already TLS",
    );
    expect(ldapProviderConfig.safeParse({ url: "ldap://dc1.hospital.example/dc=x??sub", startTls: true, bindDn: SERVICE_DN, userBase: SUFFIX }).success).toBe(false);
    expect(ldapProviderConfig.parse({ url: "ldaps://dc1.hospital.example:636", bindDn: SERVICE_DN, userBase: SUFFIX }).flavor).toBe("ad");
  });

  it("escapes filter values (RFC 4515) and converts AD GUIDs both ways", () => {
    expect(escapeFilterValue("a*)(uid=*")).toBe("a\\2a\\29\\28uid=\\2a");
    expect(escapeFilterValue("back\\slash\0")).toBe("back\\5cslash\\00");
    const text = guidToText(guid(1));
    expect(text).toBe("14131211-1615-1817-191a-1b1c1d1e1f20");
    expect(guidToBytes(text).equals(guid(1))).toBe(true);
  });
});

describe("sign-in against slapd", () => {
  it("finds the user with the service account, binds as the user over StartTLS, and expands nested groups by walking", async () => {
    const out = await authenticateLdap(openldap, secrets, "alice", "alice-Directory-pw1");
    expect(out.ok).toBe(true);
    if (!out.ok) return;
    expect(out.user).toMatchObject({
      dn: u("alice"),
      username: "alice",
      email: "alice@hospital.example",
      displayName: "Alice Tester",
      groups: ["clinical-staff", "nursing", "ward-3-nurses"],
      groupLookup: { mode: "walk", truncated: false },
    });
    // OpenLDAP's entryUUID is the stable subject.
    expect(out.user.subject).toMatch(/^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$/);
  });

  it("as Active Directory over ldaps://: objectGUID subject, sAMAccountName, groups as DNs when asked", async () => {
    const out = await authenticateLdap({ ...ad, groupsAs: "dn" }, secrets, "erin", "erin-Directory-pw1");
    expect(out).toMatchObject({ ok: true, user: { subject: guidToText(guid(5)), username: "erin", groups: [g("it-ops"), g("wardkeep-admins")] } });
  });

  it("ends a group cycle (loop-a ∈ loop-b ∈ loop-a) and stops at maxGroupDepth", async () => {
    expect(await authenticateLdap(openldap, secrets, "carol", "carol-Directory-pw1")).toMatchObject({ ok: true, user: { groups: ["loop-a", "loop-b"] } });
    const shallow = await authenticateLdap({ ...openldap, maxGroupDepth: 2 }, secrets, "alice", "alice-Directory-pw1");
    expect(shallow).toMatchObject({ ok: true, user: { groups: ["nursing", "ward-3-nurses"], groupLookup: { mode: "walk", truncated: true } } });
  });

  it("refuses, each with its precise reason: wrong password, empty password, unknown user, filter injection, disabled (AD bit and OpenLDAP lock)", async () => {
    expect(await authenticateLdap(openldap, secrets, "alice", "not-her-password")).toEqual({ ok: false, reason: "wrong password" });
    // An empty password would be an unauthenticated bind, which slapd answers with success.
    expect(await authenticateLdap(openldap, secrets, "alice", "")).toEqual({ ok: false, reason: "empty password" });
    expect(await authenticateLdap(openldap, secrets, "mallory", "whatever-pw")).toEqual({ ok: false, reason: "unknown user" });
    // Without escaping, "*" would match every uid and "a*" would match alice.
    expect(await authenticateLdap(openldap, secrets, "*", "alice-Directory-pw1")).toEqual({ ok: false, reason: "unknown user" });
    expect(await authenticateLdap(openldap, secrets, "al*)(uid=*", "alice-Directory-pw1")).toEqual({ ok: false, reason: "unknown user" });
    expect(await authenticateLdap(ad, secrets, "bob", "bob-Directory-pw1")).toEqual({ ok: false, reason: "account disabled in the directory (userAccountControl ACCOUNTDISABLE)" });
    expect(await authenticateLdap(openldap, secrets, "dave", "dave-Directory-pw1")).toEqual({ ok: false, reason: "account disabled in the directory (disabledFilter matched)" });
    // The disabled check also works with a configured filter of the hospital's own.
    expect(await authenticateLdap({ ...openldap, disabledFilter: "(mail=erin@hospital.example)" }, secrets, "erin", "erin-Directory-pw1")).toEqual({
      ok: false,
      reason: "account disabled in the directory (disabledFilter matched)",
    });
  });

  it("refuses a directory whose certificate the configured CA did not issue, and a wrong service password", async () => {
    const untrusted = await authenticateLdap({ ...openldap, caPem: slapd.otherCaPem }, secrets, "alice", "alice-Directory-pw1");
    expect(untrusted).toMatchObject({ ok: false });
    expect(!untrusted.ok && untrusted.reason).toMatch(/^directory unavailable: .*self-signed certificate in certificate chain/);
    const ldapsUntrusted = await authenticateLdap({ ...ad, caPem: slapd.otherCaPem }, secrets, "alice", "alice-Directory-pw1");
    expect(!ldapsUntrusted.ok && ldapsUntrusted.reason).toMatch(/self-signed certificate in certificate chain/);
    expect(await authenticateLdap(openldap, { bindPassword: "wrong" }, "alice", "alice-Directory-pw1")).toEqual({
      ok: false,
      reason: "directory unavailable: Error: the directory refused the service account (bindDn or its password is wrong)",
    });
    expect(await probeDirectory(openldap, secrets)).toEqual({ ok: true, groupMode: "walk" });
    expect(await probeDirectory({ ...openldap, nestedGroups: "in-chain" }, secrets)).toEqual({ ok: true, groupMode: "in-chain" });
  });

  it("reports linked accounts as active, disabled or gone for the reconcile", async () => {
    const status = await directoryStatus(ad, secrets, [guidToText(guid(1)), guidToText(guid(2)), guidToText(guid(9)), "not-a-guid"]);
    expect(Object.fromEntries(status)).toEqual({
      [guidToText(guid(1))]: "active",
      [guidToText(guid(2))]: "disabled",
      [guidToText(guid(9))]: "gone",
      "not-a-guid": "gone",
    });
    await expect(directoryStatus(ad, { bindPassword: "wrong" }, [guidToText(guid(1))])).rejects.toThrow(/refused the service account/);
  });
});

describe("sign-in through the appliance", () => {
  let tenant: { id: string; slug: string };
  let providerId: string;
  let host: Actor;

  beforeAll(async () => {
    await ensureAdminUiBuilt();
    app = await startTestAppliance();
    browser = await launchBrowser();
    tenant = await createTenant(app, "Example Hospital");
    host = hostOperatorIn(tenant.id);
    const created = await createProvider(
      app.ctx,
      host,
      { kind: "ldap", name: "Hospital AD", config: { ...ad, caPem: slapd.caPem }, secrets: { bindPassword: SERVICE_PASSWORD } },
      SYSTEM_META,
      app.baseUrl,
    );
    providerId = created.id;
    await updateProvider(app.ctx, host, providerId, { enabled: true }, SYSTEM_META, app.baseUrl);
    // Nested groups decide the role: only the top groups are named in the rules.
    const { rules } = await saveRules(
      app.ctx,
      host,
      [
        { source: "group", match: "equals", value: "wardkeep-admins", role: "admin" },
        { source: "group", match: "equals", value: "clinical-staff", role: "practitioner" },
      ],
      SYSTEM_META,
    );
    // A rule granting a privileged role waits for a second admin.
    expect(rules.map((r) => r.status)).toEqual(["pending", "active"]);
    const owner = await signIn(app, { role: "owner", tenantId: tenant.id });
    await approveRule(app.ctx, { userId: owner.user.id, role: "owner", tenantId: tenant.id, via: "session" }, rules[0]!.id, SYSTEM_META);
  });

  const login = (username: string, password: string) => request(app.baseUrl).post(`/api/v1/sso/ldap/${providerId}/login`).ca(app.caPem).send({ username, password });
  const reasons = async () => (await auditEvents(app, { action: "auth.login" })).filter((e) => e.outcome === "failure").map((e) => e.reason);

  it("refuses provider settings with plain LDAP or a service account the directory refuses, each with a readable reason", async () => {
    await expect(
      createProvider(app.ctx, host, { kind: "ldap", name: "Plain", config: { ...ad, url: slapd.ldapUrl }, secrets: { bindPassword: SERVICE_PASSWORD } }, SYSTEM_META, app.baseUrl),
    ).rejects.toMatchObject({
      status: 400,
      extras: { errors: [{ path: "settings.url", message: "plain LDAP sends passwords in clear: use an ldaps:// URL or set startTls: true" }] },
    });
    await expect(
      createProvider(app.ctx, host, { kind: "ldap", name: "Wrong password", config: { ...ad, caPem: slapd.caPem }, secrets: { bindPassword: "wrong" } }, SYSTEM_META, app.baseUrl),
    ).rejects.toThrow("the directory could not be used: Error: the directory refused the service account (bindDn or its password is wrong)");
  });

  it("signs alice in from the login page in Chromium with the role her nested groups map to; a disabled account gets the generic error", async () => {
    const context = await browser.newContext({ ignoreHTTPSErrors: true });
    const page = await context.newPage();
    const violations = watchForViolations(page);
    await page.goto(`${app.baseUrl}/#/login?tenant=${tenant.slug}`);
    const form = page.getByRole("region", { name: "Sign in with Hospital AD" });
    await form.getByLabel("User name").fill("bob");
    await form.getByLabel("Password").fill("bob-Directory-pw1");
    await form.getByRole("button", { name: "Sign in with Hospital AD" }).click();
    await expect(form.getByRole("alert").textContent()).resolves.toMatch(/identity provider did not work; try again, or ask your administrator/);
    expect(await reasons()).toContain("sso: ldap: account disabled in the directory (userAccountControl ACCOUNTDISABLE)");

    await form.getByLabel("User name").fill("alice");
    await form.getByLabel("Password").fill("alice-Directory-pw1");
    await form.getByRole("button", { name: "Sign in with Hospital AD" }).click();
    await page.waitForURL(/#\/$/);
    // A practitioner's console: their own sessions, no user administration.
    await page.getByRole("link", { name: "Sessions" }).waitFor();
    await expect(page.getByRole("link", { name: "Users & invites" }).count()).resolves.toBe(0);
    const session = await page.evaluate(() => fetch("/api/v1/auth/session").then((r) => r.json()));
    expect(session).toMatchObject({ stage: "active", user: { email: "alice@hospital.example", role: "practitioner", tenantId: tenant.id } });
    expect(violations).toEqual([]);
    await context.close();
  });

  it("maps erin's nested admin group to admin; refuses a wrong password and an unmatched user with one answer and precise audit reasons", async () => {
    const erin = await login("erin", "erin-Directory-pw1");
    expect(erin.status).toBe(200);
    expect(erin.body).toMatchObject({ mfaRequired: false, mfaEnrollmentRequired: false, csrfToken: expect.any(String) });
    const cookie = (erin.headers["set-cookie"] as unknown as string[]).find((c) => c.startsWith("__Host-wardkeep_session="))!.split(";")[0]!;
    const me = await request(app.baseUrl).get("/api/v1/auth/session").ca(app.caPem).set("Cookie", cookie);
    expect(me.body.user).toMatchObject({ email: "erin@hospital.example", role: "admin" });

    const refused = [await login("erin", "wrong-password"), await login("carol", "carol-Directory-pw1"), await login("nobody", "x"), await login("alice", "")];
    for (const res of refused) {
      expect(res.status).toBe(401);
      expect(res.body).toMatchObject({
        reason: "sso_refused",
        detail: "signing in through your organisation's identity provider did not work; try again, or ask your administrator",
      });
    }
    expect(await reasons()).toEqual(
      expect.arrayContaining(["sso: ldap: wrong password", "sso: no rule matched (2 groups received)", "sso: ldap: unknown user", "sso: ldap: empty password"]),
    );
  });

  it("the reconcile job deactivates accounts disabled in or gone from the directory and ends their sessions at once", async () => {
    const alice = await login("alice", "alice-Directory-pw1");
    const erin = await login("erin", "erin-Directory-pw1");
    const cookieOf = (res: request.Response) => (res.headers["set-cookie"] as unknown as string[]).find((c) => c.startsWith("__Host-wardkeep_session="))!.split(";")[0]!;
    const sessionOf = (cookie: string) => request(app.baseUrl).get("/api/v1/auth/session").ca(app.caPem).set("Cookie", cookie);
    expect((await sessionOf(cookieOf(alice))).status).toBe(200);

    // Nothing changed in the directory: nobody is deactivated.
    expect(await reconcileLdapProviders(app.ctx)).toMatchObject({ providers: 1, checked: 2, deactivated: 0, failedProviders: 0 });
    slapd.modify(`dn: ${u("alice")}\nchangetype: modify\nreplace: userAccountControl\nuserAccountControl: 514\n`);
    slapd.modify(`dn: ${u("erin")}\nchangetype: delete\n`);
    expect(await reconcileLdapProviders(app.ctx)).toMatchObject({ providers: 1, checked: 2, deactivated: 2, failedProviders: 0 });
    expect((await sessionOf(cookieOf(alice))).status).toBe(401);
    expect((await sessionOf(cookieOf(erin))).status).toBe(401);
    const deactivations = (await auditEvents(app, { action: "user.deactivate" })).map((e) => e.reason);
    expect(deactivations).toEqual(
      expect.arrayContaining([
        expect.stringMatching(new RegExp(`^ldap reconcile: account disabled in the directory \\(provider ${providerId}\\); sessions \\d+; api tokens 0$`)),
        expect.stringMatching(new RegExp(`^ldap reconcile: account gone from the directory \\(provider ${providerId}\\); sessions \\d+; api tokens 0$`)),
      ]),
    );
    // Run again: nothing left to do.
    expect(await reconcileLdapProviders(app.ctx)).toMatchObject({ checked: 0, deactivated: 0 });
    // The job is registered with the one runner.
    const root = await signIn(app, { role: "super_admin" });
    const jobs = await root.agent.get("/api/v1/jobs");
    expect(JSON.stringify(jobs.body)).toContain("ldap-reconcile");
  });
});
