import fs from "node:fs";
import type { Browser } from "playwright-core";
import request from "supertest";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { hostOperatorIn, type Actor } from "../../../daemon/kernel/actor.js";
import { SYSTEM_META } from "../../../daemon/kernel/request-meta.js";
import { samlProviderConfig } from "../../../daemon/sso/saml/config.js";
import { fingerprintOf, parseIdpMetadata } from "../../../daemon/sso/saml/metadata.js";
import { createProvider, updateProvider } from "../../../daemon/sso/providers.js";
import { saveRules } from "../../../daemon/sso/rules.js";
import { createTenant } from "../../helpers/actors.js";
import { startTestAppliance, tempDir, type TestAppliance } from "../../helpers/appliance.js";
import { ensureAdminUiBuilt, launchBrowser, watchForViolations } from "../../helpers/browser.js";
import { startSamlIdp, type SamlIdp, type SamlUser } from "../../helpers/saml-idp.js";
import { auditEvents } from "../auth/identity-helpers.js";

/**
 * SAML 2.0 sign-in against a samlify IdP run in this process (started once): SP-initiated sign-in
 * in Chromium, the SP metadata, IdP metadata import with pinning and rollover, and the attacks
 * (each refused with the one generic answer and its precise reason in the audit trail).
 */
let app: TestAppliance;
let idp: SamlIdp;
let browser: Browser;
let dir: string;
let tenant: { id: string; slug: string };
let host: Actor;
let providerId: string;
let openProviderId: string;
let spMetadata: string;

const nurse: SamlUser = { nameId: "nia.nurse@hospital.example", email: "nia.nurse@hospital.example", displayName: "Nia Nurse", groups: ["ward-7", "clinicians"] };

beforeAll(async () => {
  await ensureAdminUiBuilt();
  dir = tempDir("wardkeep-saml-idp-");
  [app, idp] = await Promise.all([startTestAppliance(), startSamlIdp(dir)]);
  browser = await launchBrowser();
  tenant = await createTenant(app, "Saml General");
  host = hostOperatorIn(tenant.id);
  // The IdP's current and next signing certificates are both pinned (a key rollover in progress).
  const config = { idpEntityId: idp.entityId, idpSsoUrl: idp.ssoUrl, idpCertificates: [idp.certs.current, idp.certs.next] };
  const created = await createProvider(app.ctx, host, { kind: "saml", name: "Hospital SAML", config }, SYSTEM_META, app.baseUrl);
  providerId = created.id;
  // What the IdP's administrators register: the ACS URL made from the appliance's public address (server.publicUrl).
  expect(created.redirectUri).toBe(`${app.baseUrl}/api/v1/sso/saml/${providerId}/acs`);
  await updateProvider(app.ctx, host, providerId, { enabled: true }, SYSTEM_META, app.baseUrl);
  // A second provider of the same IdP that accepts IdP-initiated responses (for the assertion-id replay cache).
  openProviderId = (await createProvider(app.ctx, host, { kind: "saml", name: "IdP-initiated", config: { ...config, allowIdpInitiated: true } }, SYSTEM_META, app.baseUrl)).id;
  await updateProvider(app.ctx, host, openProviderId, { enabled: true }, SYSTEM_META, app.baseUrl);
  await saveRules(app.ctx, host, [{ source: "group", match: "equals", value: "clinicians", role: "practitioner" }], SYSTEM_META);
  const md = await request(app.baseUrl).get(`/api/v1/sso/saml/${providerId}/metadata`).ca(app.caPem);
  spMetadata = md.text;
  idp.spMetadata = spMetadata;
});
afterAll(async () => {
  await browser?.close();
  await idp?.stop();
  await app?.close();
  if (dir) fs.rmSync(dir, { recursive: true, force: true });
});

const acsOf = (id: string) => `/api/v1/sso/saml/${id}/acs`;

/** Starts a sign-in as a browser would: the IdP URL (with the request id) and the binding cookie. */
async function start(id = providerId): Promise<{ requestId: string; cookie: string }> {
  const res = await request(app.baseUrl).get(`/api/v1/sso/saml/${id}/login`).ca(app.caPem).redirects(0);
  expect(res.status).toBe(302);
  expect(res.headers.location).toMatch(new RegExp(`^${idp.ssoUrl}\\?SAMLRequest=`));
  const cookie = (res.headers["set-cookie"] as unknown as string[]).find((c) => c.startsWith("__Host-wardkeep_saml="))!;
  expect(cookie).toMatch(/; Secure; HttpOnly; SameSite=None; Max-Age=600$/);
  return { requestId: idp.requestIdOf(res.headers.location as string), cookie: cookie.split(";")[0]! };
}

function post(samlResponse: string, cookie: string | null, id = providerId) {
  const r = request(app.baseUrl).post(acsOf(id)).ca(app.caPem).redirects(0).type("form").send({ SAMLResponse: samlResponse });
  return cookie ? r.set("Cookie", cookie) : r;
}

const xmlOf = (b64: string) => Buffer.from(b64, "base64").toString("utf8");
const b64Of = (xml: string) => Buffer.from(xml, "utf8").toString("base64");
const SIGNATURE = /<(ds:)?Signature\b[\s\S]*?<\/(ds:)?Signature>/g;

async function lastRefusal(): Promise<string | null> {
  const events = (await auditEvents(app, { action: "auth.login" })).filter((e) => e.outcome === "failure");
  return events.at(-1)?.reason ?? null;
}

/** Posts a forged response and expects the generic refusal (a redirect to the sign-in page) and `reason` in the audit trail. */
async function expectRefused(res: request.Response, reason: RegExp) {
  expect(res.status).toBe(303);
  expect(res.headers.location).toMatch(/^\/#\/login\?sso_error=[^&#]+$/);
  expect((res.headers["set-cookie"] as unknown as string[]).some((c) => c.startsWith("__Host-wardkeep_session="))).toBe(false);
  expect(await lastRefusal()).toMatch(reason);
}

describe("SAML metadata", () => {
  it("serves SP metadata naming the entity id and ACS URL, wanting signed assertions", () => {
    expect(spMetadata).toContain(`entityID="${app.baseUrl}/api/v1/sso/saml/${providerId}/metadata"`);
    expect(spMetadata).toContain(`Location="${app.baseUrl}/api/v1/sso/saml/${providerId}/acs"`);
    expect(spMetadata).toContain('WantAssertionsSigned="true"');
  });

  it("imports IdP metadata with both rollover certificates, and refuses it when no certificate has the pinned fingerprint", () => {
    const imported = parseIdpMetadata(idp.metadataXml({ withNext: true }));
    expect(imported).toMatchObject({ idpEntityId: idp.entityId, idpSsoUrl: idp.ssoUrl, fingerprints: [fingerprintOf(idp.certs.current), fingerprintOf(idp.certs.next)] });
    const { fingerprints: _shown, ...settings } = imported;
    expect(samlProviderConfig.parse(settings).idpCertificates).toHaveLength(2);
    expect(parseIdpMetadata(idp.metadataXml(), { pinFingerprint: fingerprintOf(idp.certs.current).toLowerCase() }).idpCertificates).toHaveLength(1);
    expect(() => parseIdpMetadata(idp.metadataXml(), { pinFingerprint: fingerprintOf(idp.certs.attacker) })).toThrow(
      "no signing certificate in the metadata has the expected SHA-256 fingerprint",
    );
    expect(() => parseIdpMetadata("<!DOCTYPE x [<!ENTITY a 'b'>]><x/>")).toThrow("DOCTYPE");
    expect(samlProviderConfig.safeParse({ idpEntityId: "x", idpSsoUrl: "http://idp.hospital.example/sso", idpCertificates: [idp.certs.current] }).error?.issues[0]?.message).toBe(
      "idpSsoUrl must be an https:// URL",
    );
    // The SP's own address is the appliance's one public address now: a provider that still names one is refused, saying where it went.
    expect(
      samlProviderConfig.safeParse({ spBaseUrl: "https://wardkeep.hospital.example", idpEntityId: "x", idpSsoUrl: idp.ssoUrl, idpCertificates: [idp.certs.current] }).error
        ?.issues[0]?.message,
    ).toBe("spBaseUrl was replaced by the appliance's server.publicUrl (configuration); remove it from the provider");
  });
});

describe("SP-initiated sign-in", () => {
  it("signs a nurse in through the IdP from the login page in Chromium, as practitioner", async () => {
    idp.nextUser = nurse;
    const context = await browser.newContext({ ignoreHTTPSErrors: true });
    const page = await context.newPage();
    const violations = watchForViolations(page);
    await page.goto(`${app.baseUrl}/#/login?tenant=${tenant.slug}`);
    await page.getByRole("link", { name: "Sign in with Hospital SAML" }).click();
    await page.waitForURL(/#\/$/);
    await page.getByRole("link", { name: "Sessions" }).waitFor();
    const session = await page.evaluate(() => fetch("/api/v1/auth/session").then((r) => r.json()));
    expect(session).toMatchObject({ stage: "active", user: { email: nurse.email, role: "practitioner", tenantId: tenant.id } });
    expect(violations).toEqual([]);
    await context.close();
  });

  it("refuses the same response posted again (replay), and a response carried to another browser", async () => {
    // The response the browser posted above, replayed by someone who captured it.
    await expectRefused(await post(idp.lastResponse!, (await start()).cookie), /^sso: saml: replayed response: its request was already answered$/);
    const first = await start();
    const other = await start();
    await expectRefused(await post(await idp.response(spMetadata, nurse, first.requestId), other.cookie), /^sso: saml: the response came to another browser/);
  });

  it("accepts an assertion signed with the next (rollover) certificate", async () => {
    const { requestId, cookie } = await start();
    const res = await post(await idp.response(spMetadata, nurse, requestId, { signer: "next" }), cookie);
    expect(res.status).toBe(303);
    expect(res.headers.location).toBe("/#/");
    expect((res.headers["set-cookie"] as unknown as string[]).some((c) => c.startsWith("__Host-wardkeep_session="))).toBe(true);
  });
});

describe("attacks, each refused with the generic answer and its reason audited", () => {
  it("unsigned assertion, and a response signed by a key that is not pinned", async () => {
    let s = await start();
    const unsigned = b64Of(xmlOf(await idp.response(spMetadata, nurse, s.requestId)).replace(SIGNATURE, ""));
    await expectRefused(await post(unsigned, s.cookie), /^sso: saml: signature not valid/);
    s = await start();
    await expectRefused(await post(await idp.response(spMetadata, nurse, s.requestId, { signer: "attacker" }), s.cookie), /^sso: saml: signature not valid/);
  });

  it("XML signature wrapping: a forged assertion beside or around the signed one", async () => {
    for (const wrap of ["sibling", "extensions"] as const) {
      const s = await start();
      const xml = xmlOf(await idp.response(spMetadata, nurse, s.requestId));
      const signed = /<saml:Assertion\b[\s\S]*<\/saml:Assertion>/.exec(xml)![0];
      const forged = signed
        .replace(SIGNATURE, "")
        .replace(/ ID="[^"]+"/, ' ID="_forged"')
        .replaceAll(nurse.email, "mallory@evil.example")
        .replace("clinicians", "wardkeep-admins");
      const wrapped =
        wrap === "sibling"
          ? xml.replace(signed, forged + signed)
          : xml.replace(signed, forged).replace("<samlp:Status>", `<samlp:Extensions>${signed}</samlp:Extensions><samlp:Status>`);
      await expectRefused(await post(b64Of(wrapped), s.cookie), /^sso: saml: signature not valid/);
    }
  });

  it("audience mismatch, recipient mismatch and an expired assertion", async () => {
    let s = await start();
    await expectRefused(
      await post(await idp.response(spMetadata, nurse, s.requestId, { audience: "https://other-sp.example/metadata" }), s.cookie),
      /^sso: saml: audience mismatch/,
    );
    s = await start();
    await expectRefused(
      await post(await idp.response(spMetadata, nurse, s.requestId, { recipient: "https://evil.example/acs" }), s.cookie),
      /^sso: saml: recipient mismatch: expected https:\/\/localhost:\d+\/api\/v1\/sso\/saml\/[0-9a-f-]+\/acs, received https:\/\/evil\.example\/acs$/,
    );
    s = await start();
    await expectRefused(await post(await idp.response(spMetadata, nurse, s.requestId, { shiftMs: -20 * 60_000 }), s.cookie), /^sso: saml: assertion outside its validity period/);
  });

  it("IdP-initiated responses are refused unless the provider allows them; then a replayed assertion id is refused", async () => {
    const unsolicited = await idp.response(spMetadata, nurse, null);
    await expectRefused(await post(unsolicited, null), /^sso: saml: unsolicited response/);
    // The provider that allows IdP-initiated sign-in has its own entity id and ACS URL.
    const openMetadata = (await request(app.baseUrl).get(`/api/v1/sso/saml/${openProviderId}/metadata`).ca(app.caPem)).text;
    // Another person: the nurse's address is linked to the first provider's account already.
    const ida: SamlUser = { nameId: "ida.initiated@hospital.example", email: "ida.initiated@hospital.example", displayName: "Ida", groups: ["clinicians"] };
    const response = await idp.response(openMetadata, ida, null);
    const first = await post(response, null, openProviderId);
    expect(first.status).toBe(303);
    expect(first.headers.location).toBe("/#/");
    await expectRefused(await post(response, null, openProviderId), /^sso: saml: replayed assertion id$/);
  });

  it("the browser sees one generic message on the sign-in page", async () => {
    const context = await browser.newContext({ ignoreHTTPSErrors: true });
    const page = await context.newPage();
    await page.goto(`${app.baseUrl}/#/login?sso_error=req-123`);
    await expect(page.getByTestId("sso-refused").textContent()).resolves.toBe(
      "Signing in through your organisation's identity provider did not work; try again, or ask your administrator (reference req-123).",
    );
    await context.close();
  });
});
