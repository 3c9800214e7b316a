import { execFileSync } from "node:child_process";
import { createSign, createVerify, X509Certificate } from "node:crypto";
import fs from "node:fs";
import { deflateRawSync, inflateRawSync } from "node:zlib";
import http from "node:http";
import path from "node:path";
import { validate as xmllint } from "@authenio/samlify-node-xmllint";
import * as samlify from "samlify";

/**
 * A SAML 2.0 identity provider run in-process with samlify, as the test peer of SAML sign-in. It
 * answers the appliance's HTTP-Redirect AuthnRequest at /sso with an auto-posting form carrying
 * a signed response for `nextUser`, and can forge the responses an attacker would send (unsigned,
 * signed by another key, signature wrapping, wrong audience/recipient, expired).
 */
export type SamlUser = { nameId: string; email: string; displayName: string; groups: string[] };

export type ResponseTweaks = {
  audience?: string;
  recipient?: string;
  /** Shift IssueInstant, NotBefore and NotOnOrAfter by this many ms (negative: in the past). */
  shiftMs?: number;
  /** Sign with this key pair instead of the IdP's current one. */
  signer?: "current" | "next" | "attacker";
  inResponseTo?: string | null;
  /** Encrypt the assertion to the SP metadata's encryption certificate (after signing it). */
  encrypt?: boolean;
  /** The AuthnContextClassRef (default PasswordProtectedTransport). */
  acr?: string;
  /** Shift AuthnInstant alone by this many ms (an IdP answering with an old sign-in). */
  authnShiftMs?: number;
};

/** What the IdP's /slo received from the appliance. */
export type ReceivedLogoutRequest = { id: string; nameId: string; sessionIndex: string | null; destination: string | null; signatureValid: boolean };

export type LogoutTweaks = {
  signer?: "current" | "attacker" | "none";
  /** The message's ID (a random one when absent). */
  id?: string;
  destination?: string;
  /** Shift IssueInstant by this many ms. */
  shiftMs?: number;
  status?: string;
};

export type SamlIdp = {
  entityId: string;
  ssoUrl: string;
  certs: { current: string; next: string; attacker: string };
  metadataXml(opts?: { withNext?: boolean; withSlo?: boolean }): string;
  /** Who signs in at the next /sso request (the IdP's own login screen, skipped). */
  nextUser: SamlUser;
  /** The request id of the last AuthnRequest /sso received. */
  lastRequestId: string | null;
  /** The last SAMLResponse /sso handed to the browser (base64). */
  lastResponse: string | null;
  /** The SP's metadata (the test fetches it from the appliance, whose TLS certificate only it trusts). */
  spMetadata: string | null;
  /** The ID of the AuthnRequest in an HTTP-Redirect URL (the Location the appliance redirects to). */
  requestIdOf(location: string): string;
  /** A signed response for `user` to the SP whose metadata is given (base64 of the XML). */
  response(spMetadata: string, user: SamlUser, inResponseTo: string | null, tweaks?: ResponseTweaks): Promise<string>;
  /** Tweaks for the responses /sso hands out (encryption, acr, AuthnInstant). */
  nextTweaks: ResponseTweaks;
  /** The raw AuthnRequest XML /sso last received. */
  lastAuthnRequest: string | null;
  /** The LogoutRequests the appliance sent to /slo, oldest first. */
  logoutRequests: ReceivedLogoutRequest[];
  sloUrl: string;
  /** An IdP-initiated LogoutRequest (HTTP-POST binding, base64 of the enveloped-signed XML) and its ID. */
  logoutRequest(spMetadata: string, who: { nameId: string; sessionIndex?: string }, tweaks?: LogoutTweaks): { id: string; message: string };
  /** A LogoutResponse to the appliance's LogoutRequest `inResponseTo` (HTTP-POST binding, base64). */
  logoutResponse(spMetadata: string, inResponseTo: string | null, tweaks?: LogoutTweaks): string;
  /** An HTTP-Redirect message the appliance sent (its Location): the inflated XML, and whether its signature verifies with the SP metadata's signing certificate. */
  readRedirect(location: string): { xml: string; signatureValid: boolean };
  /** The same LogoutRequest as an HTTP-Redirect query string (deflated, signed over the query as the binding says). */
  logoutRequestQuery(spMetadata: string, who: { nameId: string; sessionIndex?: string }, tweaks?: LogoutTweaks): string;
  stop(): Promise<void>;
};

samlify.setSchemaValidator({ validate: xmllint });

function keyPair(dir: string, name: string): { key: string; cert: string } {
  execFileSync("openssl", ["req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "2", "-subj", `/CN=${name}`, "-keyout", `${name}.key`, "-out", `${name}.crt`], {
    cwd: dir,
    stdio: "pipe",
  });
  return { key: fs.readFileSync(path.join(dir, `${name}.key`), "utf8"), cert: fs.readFileSync(path.join(dir, `${name}.crt`), "utf8") };
}

const esc = (s: string) => s.replace(/&/g, "&amp;").replace(/</g, "&lt;").replace(/>/g, "&gt;").replace(/"/g, "&quot;");
const REDIRECT = "urn:oasis:names:tc:SAML:2.0:bindings:HTTP-Redirect";
const POST = "urn:oasis:names:tc:SAML:2.0:bindings:HTTP-POST";

export async function startSamlIdp(dir: string): Promise<SamlIdp> {
  const pairs = { current: keyPair(dir, "idp-current"), next: keyPair(dir, "idp-next"), attacker: keyPair(dir, "attacker") };
  const server = http.createServer();
  await new Promise<void>((r) => server.listen(0, "127.0.0.1", () => r()));
  const port = (server.address() as { port: number }).port;
  const entityId = `http://127.0.0.1:${port}/idp`;
  const ssoUrl = `http://127.0.0.1:${port}/sso`;
  const sloUrl = `http://127.0.0.1:${port}/slo`;
  const idpFor = (signer: "current" | "next" | "attacker", encrypt = false) =>
    samlify.IdentityProvider({
      entityID: entityId,
      privateKey: pairs[signer].key,
      signingCert: pairs[signer].cert,
      wantAuthnRequestsSigned: false,
      isAssertionEncrypted: encrypt,
      singleSignOnService: [{ Binding: REDIRECT, Location: ssoUrl }],
      singleLogoutService: [{ Binding: REDIRECT, Location: sloUrl }],
      nameIDFormat: ["urn:oasis:names:tc:SAML:1.1:nameid-format:emailAddress"],
    });
  const sloOf = (spMetadata: string) => /<(\w+:)?SingleLogoutService\b[^>]*Location="([^"]+)"/.exec(spMetadata)?.[2] ?? "";
  const certOf = (spMetadata: string, use: "signing" | "encryption") => {
    const descriptor = new RegExp(`<(\\w+:)?KeyDescriptor use="${use}"[\\s\\S]*?<(\\w+:)?X509Certificate>([^<]+)<`).exec(spMetadata);
    return new X509Certificate(Buffer.from(descriptor![3]!.replace(/\s+/g, ""), "base64"));
  };
  const logoutId = () => `_l${Math.random().toString(16).slice(2)}${Date.now()}`;

  function logoutRequestXml(spMetadata: string, who: { nameId: string; sessionIndex?: string }, tweaks: LogoutTweaks, id: string): string {
    const at = new Date(Date.now() + (tweaks.shiftMs ?? 0)).toISOString();
    return (
      `<samlp:LogoutRequest xmlns:samlp="urn:oasis:names:tc:SAML:2.0:protocol" xmlns:saml="urn:oasis:names:tc:SAML:2.0:assertion" ID="${id}" Version="2.0" IssueInstant="${at}" Destination="${esc(tweaks.destination ?? sloOf(spMetadata))}">` +
      `<saml:Issuer>${esc(entityId)}</saml:Issuer><saml:NameID Format="urn:oasis:names:tc:SAML:1.1:nameid-format:emailAddress">${esc(who.nameId)}</saml:NameID>` +
      `${who.sessionIndex ? `<samlp:SessionIndex>${esc(who.sessionIndex)}</samlp:SessionIndex>` : ""}</samlp:LogoutRequest>`
    );
  }

  /** Signs a logout message with samlify (enveloped signature after the Issuer), or not at all. */
  function signedLogout(kind: "request" | "response", spMetadata: string, xml: string, id: string, signer: "current" | "attacker" | "none"): string {
    if (signer === "none") return Buffer.from(xml, "utf8").toString("base64");
    const sp = samlify.ServiceProvider({ metadata: spMetadata, wantLogoutRequestSigned: true, wantLogoutResponseSigned: true });
    const replace = () => ({ id, context: xml });
    const made =
      kind === "request"
        ? idpFor(signer).createLogoutRequest(sp, "post", {}, { customTagReplacement: replace })
        : idpFor(signer).createLogoutResponse(sp, { extract: {} } as never, "post", { customTagReplacement: replace });
    return (made as { context: string }).context;
  }

  async function response(spMetadata: string, user: SamlUser, inResponseTo: string | null, tweaks: ResponseTweaks = {}): Promise<string> {
    const sp = samlify.ServiceProvider({ metadata: spMetadata });
    const idp = idpFor(tweaks.signer ?? "current", tweaks.encrypt === true);
    const shift = tweaks.shiftMs ?? 0;
    const now = Date.now() + shift;
    const iso = (ms: number) => new Date(ms).toISOString();
    const acsElement = (spMetadata.match(/<(\w+:)?AssertionConsumerService\b[^>]*>/g) ?? []).find((e) => e.includes(`Binding="${POST}"`)) ?? "";
    const acs = /Location="([^"]+)"/.exec(acsElement)?.[1] ?? "";
    const spEntityId = /entityID="([^"]+)"/.exec(spMetadata)?.[1] ?? "";
    const attrs = [
      `<saml:Attribute Name="email"><saml:AttributeValue xsi:type="xs:string">${esc(user.email)}</saml:AttributeValue></saml:Attribute>`,
      `<saml:Attribute Name="displayName"><saml:AttributeValue xsi:type="xs:string">${esc(user.displayName)}</saml:AttributeValue></saml:Attribute>`,
      `<saml:Attribute Name="groups">${user.groups.map((g) => `<saml:AttributeValue xsi:type="xs:string">${esc(g)}</saml:AttributeValue>`).join("")}</saml:Attribute>`,
    ].join("");
    const id = `_r${Math.random().toString(16).slice(2)}${Date.now()}`;
    const assertionId = `_a${Math.random().toString(16).slice(2)}${Date.now()}`;
    const irt = tweaks.inResponseTo === undefined ? inResponseTo : tweaks.inResponseTo;
    const irtAttr = irt ? ` InResponseTo="${esc(irt)}"` : "";
    const xml =
      `<samlp:Response xmlns:samlp="urn:oasis:names:tc:SAML:2.0:protocol" xmlns:saml="urn:oasis:names:tc:SAML:2.0:assertion" ID="${id}" Version="2.0" IssueInstant="${iso(now)}" Destination="${esc(acs)}"${irtAttr}>` +
      `<saml:Issuer>${esc(entityId)}</saml:Issuer><samlp:Status><samlp:StatusCode Value="urn:oasis:names:tc:SAML:2.0:status:Success"/></samlp:Status>` +
      `<saml:Assertion xmlns:xsi="http://www.w3.org/2001/XMLSchema-instance" xmlns:xs="http://www.w3.org/2001/XMLSchema" xmlns:saml="urn:oasis:names:tc:SAML:2.0:assertion" ID="${assertionId}" Version="2.0" IssueInstant="${iso(now)}">` +
      `<saml:Issuer>${esc(entityId)}</saml:Issuer><saml:Subject><saml:NameID Format="urn:oasis:names:tc:SAML:1.1:nameid-format:emailAddress">${esc(user.nameId)}</saml:NameID>` +
      `<saml:SubjectConfirmation Method="urn:oasis:names:tc:SAML:2.0:cm:bearer"><saml:SubjectConfirmationData NotOnOrAfter="${iso(now + 5 * 60_000)}" Recipient="${esc(tweaks.recipient ?? acs)}"${irtAttr}/></saml:SubjectConfirmation></saml:Subject>` +
      `<saml:Conditions NotBefore="${iso(now - 60_000)}" NotOnOrAfter="${iso(now + 5 * 60_000)}"><saml:AudienceRestriction><saml:Audience>${esc(tweaks.audience ?? spEntityId)}</saml:Audience></saml:AudienceRestriction></saml:Conditions>` +
      `<saml:AuthnStatement AuthnInstant="${iso(now + (tweaks.authnShiftMs ?? 0))}" SessionIndex="${assertionId}"><saml:AuthnContext><saml:AuthnContextClassRef>${esc(tweaks.acr ?? "urn:oasis:names:tc:SAML:2.0:ac:classes:PasswordProtectedTransport")}</saml:AuthnContextClassRef></saml:AuthnContext></saml:AuthnStatement>` +
      `<saml:AttributeStatement>${attrs}</saml:AttributeStatement></saml:Assertion></samlp:Response>`;
    const ctx = await idp.createLoginResponse(
      sp,
      { extract: { request: { id: irt ?? "" } } } as never,
      "post",
      { email: user.email },
      { customTagReplacement: () => ({ id, context: xml }) },
    );
    return (ctx as { context: string }).context;
  }

  const idp: SamlIdp = {
    entityId,
    ssoUrl,
    certs: { current: pairs.current.cert, next: pairs.next.cert, attacker: pairs.attacker.cert },
    metadataXml(opts = {}) {
      const certs = [pairs.current.cert, ...(opts.withNext ? [pairs.next.cert] : [])];
      return samlify
        .IdentityProvider({
          entityID: entityId,
          signingCert: certs,
          singleSignOnService: [{ Binding: REDIRECT, Location: ssoUrl }],
          ...(opts.withSlo
            ? {
                singleLogoutService: [
                  { Binding: POST, Location: `${sloUrl}/post` },
                  { Binding: REDIRECT, Location: sloUrl },
                ],
              }
            : {}),
        })
        .getMetadata();
    },
    nextTweaks: {},
    lastAuthnRequest: null,
    logoutRequests: [],
    sloUrl,
    logoutRequest(spMetadata, who, tweaks = {}) {
      const id = tweaks.id ?? logoutId();
      return { id, message: signedLogout("request", spMetadata, logoutRequestXml(spMetadata, who, tweaks, id), id, tweaks.signer ?? "current") };
    },
    logoutResponse(spMetadata, inResponseTo, tweaks = {}) {
      const id = logoutId();
      const at = new Date(Date.now() + (tweaks.shiftMs ?? 0)).toISOString();
      const xml =
        `<samlp:LogoutResponse xmlns:samlp="urn:oasis:names:tc:SAML:2.0:protocol" xmlns:saml="urn:oasis:names:tc:SAML:2.0:assertion" ID="${id}" Version="2.0" IssueInstant="${at}" Destination="${esc(tweaks.destination ?? sloOf(spMetadata))}"${inResponseTo ? ` InResponseTo="${esc(inResponseTo)}"` : ""}>` +
        `<saml:Issuer>${esc(entityId)}</saml:Issuer><samlp:Status><samlp:StatusCode Value="${esc(tweaks.status ?? "urn:oasis:names:tc:SAML:2.0:status:Success")}"/></samlp:Status></samlp:LogoutResponse>`;
      return signedLogout("response", spMetadata, xml, id, tweaks.signer ?? "current");
    },
    readRedirect(location) {
      const url = new URL(location);
      const param = url.searchParams.has("SAMLRequest") ? "SAMLRequest" : "SAMLResponse";
      // The binding signs the parameters as they were sent, in this order (SAML bindings §3.4.4.1).
      const signedPart = url.search
        .slice(1)
        .split("&")
        .filter((kv) => new RegExp(`^(${param}|RelayState|SigAlg)=`).test(kv))
        .join("&");
      const signature = url.searchParams.get("Signature");
      const signatureValid =
        signature !== null && url.searchParams.get("SigAlg") === "http://www.w3.org/2001/04/xmldsig-more#rsa-sha256"
          ? createVerify("RSA-SHA256").update(signedPart).verify(certOf(idp.spMetadata!, "signing").publicKey, signature, "base64")
          : false;
      return { xml: inflateRawSync(Buffer.from(url.searchParams.get(param) ?? "", "base64")).toString("utf8"), signatureValid };
    },
    logoutRequestQuery(spMetadata, who, tweaks = {}) {
      const xml = logoutRequestXml(spMetadata, who, tweaks, logoutId());
      const signed = `SAMLRequest=${encodeURIComponent(deflateRawSync(xml).toString("base64"))}&SigAlg=${encodeURIComponent("http://www.w3.org/2001/04/xmldsig-more#rsa-sha256")}`;
      const signer = tweaks.signer ?? "current";
      if (signer === "none") return signed;
      return `${signed}&Signature=${encodeURIComponent(createSign("RSA-SHA256").update(signed).sign(pairs[signer].key, "base64"))}`;
    },
    nextUser: { nameId: "nobody@hospital.example", email: "nobody@hospital.example", displayName: "Nobody", groups: [] },
    lastRequestId: null,
    lastResponse: null,
    spMetadata: null,
    requestIdOf(location) {
      const raw = samlify.Utility.inflateString(new URL(location).searchParams.get("SAMLRequest") ?? "");
      return /\bID="([^"]+)"/.exec(raw)![1]!;
    },
    response,
    async stop() {
      server.closeAllConnections();
      await new Promise<void>((r) => server.close(() => r()));
    },
  };

  server.on("request", (req, res) => {
    void (async () => {
      const url = new URL(req.url ?? "/", ssoUrl);
      if (url.pathname === "/slo") return void answerLogout(url, res);
      if (url.pathname !== "/sso") return void res.writeHead(404).end();
      const query = Object.fromEntries(url.searchParams);
      // The request names its ACS; the SP's metadata (served by the appliance) says the rest.
      const raw = samlify.Utility.inflateString(query.SAMLRequest ?? "");
      const acs = /AssertionConsumerServiceURL="([^"]+)"/.exec(raw)?.[1] ?? "";
      const md = idp.spMetadata;
      if (!md) throw new Error("set spMetadata first");
      // The request's ID from the inflated AuthnRequest. samlify's parseLoginRequest would also
      // check it against the SAML schema with xmllint, which costs about 20 s of CPU per run here.
      const requestId = /\bID="([^"]+)"/.exec(raw)![1]!;
      idp.lastRequestId = requestId;
      idp.lastAuthnRequest = raw;
      const samlResponse = await response(md, idp.nextUser, requestId, idp.nextTweaks);
      idp.lastResponse = samlResponse;
      const relay = query.RelayState ? `<input type="hidden" name="RelayState" value="${esc(query.RelayState)}">` : "";
      res
        .writeHead(200, { "content-type": "text/html; charset=utf-8" })
        .end(
          `<!doctype html><html><body><h1>Test IdP</h1><form id="f" method="post" action="${esc(acs)}"><input type="hidden" name="SAMLResponse" value="${esc(samlResponse)}">${relay}<button type="submit">Continue</button></form><script>document.getElementById("f").submit()</script></body></html>`,
        );
    })().catch((err: unknown) => res.writeHead(500).end(String(err)));
  });

  /** The appliance's LogoutRequest: its signature is checked over the query as sent, then a signed LogoutResponse is posted back. */
  function answerLogout(url: URL, res: http.ServerResponse): void {
    const md = idp.spMetadata!;
    const { xml, signatureValid } = idp.readRedirect(url.href);
    const received: ReceivedLogoutRequest = {
      id: /\bID="([^"]+)"/.exec(xml)![1]!,
      nameId: /<(\w+:)?NameID\b[^>]*>([^<]+)</.exec(xml)?.[2] ?? "",
      sessionIndex: /<(\w+:)?SessionIndex\b[^>]*>([^<]+)</.exec(xml)?.[2] ?? null,
      destination: /\bDestination="([^"]+)"/.exec(xml)?.[1] ?? null,
      signatureValid,
    };
    idp.logoutRequests.push(received);
    const answer = idp.logoutResponse(md, received.id);
    res
      .writeHead(200, { "content-type": "text/html; charset=utf-8" })
      .end(
        `<!doctype html><html><body><h1>Test IdP: signed out</h1><form id="f" method="post" action="${esc(sloOf(md))}"><input type="hidden" name="SAMLResponse" value="${esc(answer)}"><button type="submit">Continue</button></form><script>document.getElementById("f").submit()</script></body></html>`,
      );
  }
  return idp;
}
