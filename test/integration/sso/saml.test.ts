import fs from "node:fs";
import { inflateRawSync } from "node:zlib";
import type { Browser, BrowserContext, Page } from "playwright-core";
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
 * and single logout in Chromium, the SP metadata, IdP metadata import with pinning and rollover,
 * IdP-initiated logout across two replicas, encrypted assertions, step-up with ForceAuthn, and the
 * attacks (each refused with the one generic answer and its precise reason in the audit trail).
 */
let app: TestAppliance;
let idp: SamlIdp;
let browser: Browser;
let dir: string;
let tenant: { id: string; slug: string };
let host: Actor;
let providerId: string;
let openProviderId: string;
let encryptedProviderId: string;
let spMetadata: string;
/** The nurse's browser, signed in by the first test and signed out by the single logout test. */
let nurseBrowser: { context: BrowserContext; page: Page } | null = null;
const MFA_ACR = "https://refeds.org/profile/mfa";

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
  const created = await createProvider(
    app.ctx,
    host,
    { kind: "saml", name: "Hospital SAML", config: { ...config, idpSloUrl: idp.sloUrl }, mfaAcrValues: [MFA_ACR] },
    SYSTEM_META,
    app.baseUrl,
  );
  providerId = created.id;
  // What the IdP's administrators register: the ACS URL made from the appliance's public address (server.publicUrl).
  expect(created.redirectUri).toBe(`${app.baseUrl}/api/v1/sso/saml/${providerId}/acs`);
  await updateProvider(app.ctx, host, providerId, { enabled: true }, SYSTEM_META, app.baseUrl);
  // A second provider of the same IdP that accepts IdP-initiated responses (for the assertion-id replay cache).
  openProviderId = (await createProvider(app.ctx, host, { kind: "saml", name: "IdP-initiated", config: { ...config, allowIdpInitiated: true } }, SYSTEM_META, app.baseUrl)).id;
  await updateProvider(app.ctx, host, openProviderId, { enabled: true }, SYSTEM_META, app.baseUrl);
  // A third that requires encrypted assertions.
  encryptedProviderId = (
    await createProvider(app.ctx, host, { kind: "saml", name: "Encrypted", config: { ...config, requireEncryptedAssertions: true } }, SYSTEM_META, app.baseUrl)
  ).id;
  await updateProvider(app.ctx, host, encryptedProviderId, { enabled: true }, SYSTEM_META, app.baseUrl);
  await saveRules(app.ctx, host, [{ source: "group", match: "equals", value: "clinicians", role: "practitioner" }], SYSTEM_META);
  const md = await request(app.baseUrl).get(`/api/v1/sso/saml/${providerId}/metadata`).ca(app.caPem);
  spMetadata = md.text;
  idp.spMetadata = spMetadata;
});
afterAll(async () => {
  await nurseBrowser?.context.close();
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
  it("serves SP metadata naming the entity id, ACS and SLO URLs and the SP's certificates, wanting signed assertions", async () => {
    expect(spMetadata).toContain(`entityID="${app.baseUrl}/api/v1/sso/saml/${providerId}/metadata"`);
    expect(spMetadata).toContain(`Location="${app.baseUrl}/api/v1/sso/saml/${providerId}/acs"`);
    expect(spMetadata).toContain('WantAssertionsSigned="true"');
    // The single logout service, and the SP's own certificates: one signs its messages, one is for encrypting assertions to it.
    expect(spMetadata).toMatch(
      new RegExp(`<SingleLogoutService Binding="urn:oasis:names:tc:SAML:2.0:bindings:HTTP-POST" Location="${app.baseUrl}/api/v1/sso/saml/${providerId}/slo"/>`),
    );
    expect(spMetadata).toContain('AuthnRequestsSigned="true"');
    const certs = [...spMetadata.matchAll(/<KeyDescriptor use="(signing|encryption)">[\s\S]*?<ds:X509Certificate>([^<]+)</g)].map((m) => [m[1], m[2]]);
    expect(certs.map(([use]) => use)).toEqual(["signing", "encryption"]);
    expect(certs[0]![1]).not.toBe(certs[1]![1]);
    // The private keys are sealed in the database; the certificates stay the same on the next read (and on every replica).
    const again = (await request(app.baseUrl).get(`/api/v1/sso/saml/${providerId}/metadata`).ca(app.caPem)).text;
    expect(again.match(/<ds:X509Certificate>[^<]+</g)).toEqual(spMetadata.match(/<ds:X509Certificate>[^<]+</g));
  });

  it("imports IdP metadata with both rollover certificates, and refuses it when no certificate has the pinned fingerprint", () => {
    const imported = parseIdpMetadata(idp.metadataXml({ withNext: true }));
    expect(imported).toMatchObject({ idpEntityId: idp.entityId, idpSsoUrl: idp.ssoUrl, fingerprints: [fingerprintOf(idp.certs.current), fingerprintOf(idp.certs.next)] });
    const { fingerprints: _shown, ...settings } = imported;
    expect(samlProviderConfig.parse(settings).idpCertificates).toHaveLength(2);
    expect(parseIdpMetadata(idp.metadataXml(), { pinFingerprint: fingerprintOf(idp.certs.current).toLowerCase() }).idpCertificates).toHaveLength(1);
    // The single logout URL is the HTTP-Redirect one (the appliance sends its LogoutRequest that way); none when the IdP offers none.
    expect(parseIdpMetadata(idp.metadataXml({ withSlo: true })).idpSloUrl).toBe(idp.sloUrl);
    expect(parseIdpMetadata(idp.metadataXml()).idpSloUrl).toBeUndefined();
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
    nurseBrowser = { context, page };
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

  it("the browser sees one generic message on the sign-in page, and another after a refused logout message", async () => {
    const context = await browser.newContext({ ignoreHTTPSErrors: true });
    const page = await context.newPage();
    await page.goto(`${app.baseUrl}/#/login?sso_error=req-123`);
    await expect(page.getByTestId("sso-refused").textContent()).resolves.toBe(
      "Signing in through your organisation's identity provider did not work; try again, or ask your administrator (reference req-123).",
    );
    // A refused logout message of the IdP (single logout) has its own message: the session here has ended, the IdP's maybe not.
    await page.goto(`${app.baseUrl}/#/login?slo_error=req-456`);
    await expect(page.getByTestId("slo-refused").textContent()).resolves.toBe(
      "Signing out at your organisation's identity provider could not be confirmed; close the browser to be sure, or ask your administrator (reference req-456).",
    );
    await context.close();
  });
});

/** Signs `user` in through the API as a browser would: the session cookie, and the SessionIndex of the IdP session. */
async function signIn(user: SamlUser, id = providerId, metadata = spMetadata, tweaks: Parameters<SamlIdp["response"]>[3] = {}): Promise<{ cookie: string; sessionIndex: string }> {
  const s = await start(id);
  const response = await idp.response(metadata, user, s.requestId, tweaks);
  const res = await post(response, s.cookie, id);
  expect(res.headers.location).toBe("/#/");
  return {
    cookie: (res.headers["set-cookie"] as unknown as string[]).find((c) => c.startsWith("__Host-wardkeep_session="))!.split(";")[0]!,
    sessionIndex: /SessionIndex="([^"]+)"/.exec(xmlOf(response))?.[1] ?? "",
  };
}
const sessionOn = (base: string, cookie: string) => request(base).get("/api/v1/auth/session").ca(app.caPem).set("Cookie", cookie);
const sloOf = (id = providerId) => `/api/v1/sso/saml/${id}/slo`;
const postSlo = (form: Record<string, string>, cookie?: string) => {
  const r = request(app.baseUrl).post(sloOf()).ca(app.caPem).redirects(0).type("form").send(form);
  return cookie ? r.set("Cookie", cookie) : r;
};
async function lastEvent(action: string, outcome: string): Promise<string | null> {
  return (await auditEvents(app, { action })).filter((e) => e.outcome === outcome).at(-1)?.reason ?? null;
}

describe("single logout", () => {
  it("signing out at the appliance sends a signed LogoutRequest to the IdP, whose LogoutResponse brings the browser back to the sign-in page", async () => {
    const { context, page } = nurseBrowser!;
    nurseBrowser = null;
    const cookie = (await context.cookies()).filter((c) => c.name === "__Host-wardkeep_session").map((c) => `${c.name}=${c.value}`)[0]!;
    const before = idp.logoutRequests.length;
    await page.getByRole("button", { name: "Sign out" }).click();
    // Appliance → IdP (LogoutRequest, HTTP-Redirect) → appliance (LogoutResponse, HTTP-POST) → the sign-in page, without an error.
    await page.waitForURL(`${app.baseUrl}/#/login`);
    await page.getByRole("heading", { name: "Sign in to Wardkeep" }).waitFor();
    expect(await page.getByTestId("slo-refused").count()).toBe(0);
    const received = idp.logoutRequests.slice(before);
    expect(received).toEqual([
      { id: expect.stringMatching(/^_[0-9a-f]{40}$/), nameId: nurse.nameId, sessionIndex: expect.stringMatching(/^_a/), destination: idp.sloUrl, signatureValid: true },
    ]);
    expect((await sessionOn(app.baseUrl, cookie)).status).toBe(401);
    await context.close();
  });

  it("an IdP-initiated LogoutRequest ends the person's sessions on every replica and is answered with a signed LogoutResponse", async () => {
    const replica = await startTestAppliance({ db: app.db, dataDir: app.dataDir });
    try {
      const cookies = [(await signIn(nurse)).cookie, (await signIn(nurse)).cookie];
      expect((await sessionOn(replica.baseUrl, cookies[0]!)).body.user.email).toBe(nurse.email);
      const { id, message } = idp.logoutRequest(spMetadata, { nameId: nurse.nameId });
      const res = await postSlo({ SAMLRequest: message, RelayState: "idp-state-7" });
      expect(res.status).toBe(303);
      // The answer goes to the IdP's configured single logout URL, signed with the SP's key, naming the request.
      expect(res.headers.location).toMatch(new RegExp(`^${idp.sloUrl}\\?SAMLResponse=[^&]+&RelayState=idp-state-7&SigAlg=[^&]+&Signature=`));
      const answer = idp.readRedirect(res.headers.location as string);
      expect(answer.signatureValid).toBe(true);
      expect(answer.xml).toContain(`InResponseTo="${id}"`);
      expect(answer.xml).toContain(`Destination="${idp.sloUrl}"`);
      expect(answer.xml).toContain('<samlp:StatusCode Value="urn:oasis:names:tc:SAML:2.0:status:Success"/>');
      for (const cookie of cookies) {
        expect((await sessionOn(app.baseUrl, cookie)).status).toBe(401);
        expect((await sessionOn(replica.baseUrl, cookie)).status).toBe(401);
      }
      // NameID alone names every session of the person made through this provider: these two, and the one the rollover test left open.
      expect(await lastEvent("auth.logout", "success")).toBe(`single logout from saml provider ${providerId}: 3 session(s) ended (NameID)`);

      // The same message again is a replay.
      const again = await postSlo({ SAMLRequest: message });
      expect(again.headers.location).toMatch(/^\/#\/login\?slo_error=[^&#]+$/);
      expect(await lastEvent("auth.logout", "failure")).toBe("sso: saml: single logout: replayed LogoutRequest (its ID was already accepted)");
    } finally {
      await replica.close();
    }
  });

  it("accepts a signed LogoutRequest over HTTP-Redirect too, and only the session of the IdP session it names (SessionIndex); a long message ID too", async () => {
    const ida: SamlUser = { nameId: "ida.redirect@hospital.example", email: "ida.redirect@hospital.example", displayName: "Ida", groups: ["clinicians"] };
    const [first, second] = [await signIn(ida), await signIn(ida)];
    const res = await request(app.baseUrl)
      .get(`${sloOf()}?${idp.logoutRequestQuery(spMetadata, { nameId: ida.nameId, sessionIndex: second.sessionIndex })}`)
      .ca(app.caPem)
      .redirects(0);
    expect(res.status).toBe(303);
    expect(idp.readRedirect(res.headers.location as string).signatureValid).toBe(true);
    expect((await sessionOn(app.baseUrl, second.cookie)).status).toBe(401);
    expect((await sessionOn(app.baseUrl, first.cookie)).status).toBe(200);
    expect(await lastEvent("auth.logout", "success")).toBe(`single logout from saml provider ${providerId}: 1 session(s) ended (NameID+SessionIndex)`);
    // An IdP's long message ID is kept for the replay check as far as the column allows.
    const long = await postSlo({ SAMLRequest: idp.logoutRequest(spMetadata, { nameId: "nobody@hospital.example" }, { id: `_${"a".repeat(250)}` }).message });
    expect(long.headers.location).toMatch(new RegExp(`^${idp.sloUrl}\\?SAMLResponse=`));
  });

  it("refuses logout messages that are unsigned, wrongly signed, for another endpoint, stale or unsolicited, each with its reason audited", async () => {
    const who = { nameId: nurse.nameId };
    const signinRequest = (await start()).requestId;
    const cases: [string, () => request.Test, RegExp][] = [
      [
        "an unsigned HTTP-Redirect request",
        () =>
          request(app.baseUrl)
            .get(`${sloOf()}?${idp.logoutRequestQuery(spMetadata, who, { signer: "none" })}`)
            .ca(app.caPem)
            .redirects(0),
        /unsigned message/,
      ],
      [
        "a redirect signed by another key",
        () =>
          request(app.baseUrl)
            .get(`${sloOf()}?${idp.logoutRequestQuery(spMetadata, who, { signer: "attacker" })}`)
            .ca(app.caPem)
            .redirects(0),
        /^sso: saml: single logout: signature not valid/,
      ],
      [
        "an unsigned posted request",
        () => postSlo({ SAMLRequest: idp.logoutRequest(spMetadata, who, { signer: "none" }).message }),
        /^sso: saml: single logout: signature not valid/,
      ],
      [
        "a posted request signed by another key",
        () => postSlo({ SAMLRequest: idp.logoutRequest(spMetadata, who, { signer: "attacker" }).message }),
        /^sso: saml: single logout: signature not valid/,
      ],
      [
        "a request for another endpoint",
        () => postSlo({ SAMLRequest: idp.logoutRequest(spMetadata, who, { destination: "https://other-sp.example/slo" }).message }),
        /^sso: saml: single logout: destination mismatch: expected https:\/\/localhost:\d+\/api\/v1\/sso\/saml\/[0-9a-f-]+\/slo, received https:\/\/other-sp\.example\/slo$/,
      ],
      ["a stale request", () => postSlo({ SAMLRequest: idp.logoutRequest(spMetadata, who, { shiftMs: -30 * 60_000 }).message }), /outside its validity period/],
      [
        "a response naming no request of the appliance",
        () => postSlo({ SAMLResponse: idp.logoutResponse(spMetadata, "_never-sent") }),
        /InResponseTo names no request this appliance made/,
      ],
      ["a response without InResponseTo", () => postSlo({ SAMLResponse: idp.logoutResponse(spMetadata, null) }), /unsolicited LogoutResponse \(no InResponseTo\)$/],
      [
        "a response naming a sign-in request",
        () => postSlo({ SAMLResponse: idp.logoutResponse(spMetadata, signinRequest) }),
        /InResponseTo names a signin request, not a logout request$/,
      ],
      ["a response signed by another key", () => postSlo({ SAMLResponse: idp.logoutResponse(spMetadata, "_x", { signer: "attacker" }) }), /signature not valid/],
      [
        "a response with an error status",
        () => postSlo({ SAMLResponse: idp.logoutResponse(spMetadata, "_x", { status: "urn:oasis:names:tc:SAML:2.0:status:Requester" }) }),
        /the IdP answered with status urn:oasis:names:tc:SAML:2.0:status:Requester$/,
      ],
    ];
    for (const [what, send, reason] of cases) {
      const res = await send();
      expect(res.status, what).toBe(303);
      expect(res.headers.location, what).toMatch(/^\/#\/login\?slo_error=[^&#]+$/);
      expect(await lastEvent("auth.logout", "failure"), what).toMatch(reason);
    }
  });
});

describe("encrypted assertions", () => {
  const eve: SamlUser = { nameId: "eve.enc@hospital.example", email: "eve.enc@hospital.example", displayName: "Eve", groups: ["clinicians"] };
  let encryptedMetadata: string;
  beforeAll(async () => {
    encryptedMetadata = (await request(app.baseUrl).get(`/api/v1/sso/saml/${encryptedProviderId}/metadata`).ca(app.caPem)).text;
  });

  it("signs in with an assertion the IdP encrypted to the SP's certificate", async () => {
    const s = await start(encryptedProviderId);
    const response = await idp.response(encryptedMetadata, eve, s.requestId, { encrypt: true });
    expect(xmlOf(response)).toMatch(/<saml:EncryptedAssertion\b/);
    expect(xmlOf(response)).not.toContain(eve.email);
    const { cookie } = { cookie: (await post(response, s.cookie, encryptedProviderId).expect(303)).headers["set-cookie"] as unknown as string[] };
    const session = cookie.find((c) => c.startsWith("__Host-wardkeep_session="))!.split(";")[0]!;
    expect((await sessionOn(app.baseUrl, session)).body).toMatchObject({ stage: "active", user: { email: eve.email, role: "practitioner" } });
  });

  it("refuses a signed but unencrypted assertion where the provider requires encryption", async () => {
    const s = await start(encryptedProviderId);
    await expectRefused(
      await post(await idp.response(encryptedMetadata, eve, s.requestId), s.cookie, encryptedProviderId),
      /^sso: saml: assertion not encrypted: this provider requires encrypted assertions/,
    );
  });
});

describe("step-up at the IdP (ForceAuthn)", () => {
  type Signed = { cookie: string; csrf: string };
  async function signedIn(): Promise<Signed> {
    const { cookie } = await signIn(nurse);
    return { cookie, csrf: (await sessionOn(app.baseUrl, cookie)).body.csrfToken as string };
  }
  /** Starts a step-up from the session: the IdP URL, the request it carries, and the binding cookie. */
  async function stepUp(s: Signed): Promise<{ requestXml: string; requestId: string; binding: string }> {
    const res = await request(app.baseUrl).post("/api/v1/sso/step-up").ca(app.caPem).set("Cookie", s.cookie).set("X-CSRF-Token", s.csrf).send({ returnTo: "/sessions" });
    expect(res.status).toBe(201);
    const url = new URL(res.body.url as string);
    expect(`${url.origin}${url.pathname}`).toBe(idp.ssoUrl);
    const binding = (res.headers["set-cookie"] as unknown as string[]).find((c) => c.startsWith("__Host-wardkeep_saml="))!.split(";")[0]!;
    const requestXml = inflateRawSync(Buffer.from(url.searchParams.get("SAMLRequest")!, "base64")).toString("utf8");
    return { requestXml, requestId: idp.requestIdOf(url.href), binding };
  }
  const stepUpFailure = () => lastEvent("auth.mfa.step_up", "failure");

  it("signs the person in again at the IdP, then the session's second factor is fresh", async () => {
    const s = await signedIn();
    expect((await sessionOn(app.baseUrl, s.cookie)).body.mfaVerifiedAt).toBeNull();
    const started = await stepUp(s);
    expect(started.requestXml).toContain('ForceAuthn="true"');
    const res = await post(await idp.response(spMetadata, nurse, started.requestId, { acr: MFA_ACR }), started.binding);
    expect(res.status).toBe(303);
    expect(res.headers.location).toBe("/#/sessions");
    // No new session: the open one now has a fresh second factor.
    expect((res.headers["set-cookie"] as unknown as string[]).some((c) => c.startsWith("__Host-wardkeep_session="))).toBe(false);
    const after = (await sessionOn(app.baseUrl, s.cookie)).body;
    expect(Date.now() - Date.parse(after.mfaVerifiedAt as string)).toBeLessThan(60_000);
    expect(await lastEvent("auth.mfa.step_up", "success")).toBe(`at the IdP: saml provider ${providerId}`);
  });

  for (const [what, tweaks, reason] of [
    [
      "the IdP answers with an old sign-in (AuthnInstant)",
      { acr: MFA_ACR, authnShiftMs: -5 * 60_000 },
      /^sso: saml: step-up: the IdP did not sign the person in again \(AuthnInstant/,
    ],
    ["the IdP asserts no second factor", {}, /^sso: step-up: the IdP did not assert a second factor/],
    ["another person signs in at the IdP", { acr: MFA_ACR, as: "other" }, /^sso: step-up: another person signed in at the IdP/],
  ] as const) {
    it(`refuses the step-up when ${what}; the person stays signed in without a fresh second factor`, async () => {
      const s = await signedIn();
      const started = await stepUp(s);
      const user = "as" in tweaks ? { ...nurse, nameId: "someone.else@hospital.example", email: "someone.else@hospital.example" } : nurse;
      const res = await post(
        await idp.response(spMetadata, user, started.requestId, { acr: tweaks.acr, authnShiftMs: "authnShiftMs" in tweaks ? tweaks.authnShiftMs : 0 }),
        started.binding,
      );
      expect(res.status).toBe(303);
      expect(res.headers.location).toMatch(/^\/#\/\?sso_error=[^&#]+$/);
      expect(await stepUpFailure()).toMatch(reason);
      const after = await sessionOn(app.baseUrl, s.cookie);
      expect(after.status).toBe(200);
      expect(after.body.mfaVerifiedAt).toBeNull();
    });
  }
});
