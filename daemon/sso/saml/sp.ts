import { createHash, randomBytes } from "node:crypto";
import { inflateRawSync } from "node:zlib";
import type { CacheItem, CacheProvider, Profile, SAML } from "@node-saml/node-saml";
import { DOMParser } from "@xmldom/xmldom";
import { appliancePublicUrl } from "../../config/public-url.js";
import type { ApplianceContext } from "../../context.js";
import { inScope } from "../../db/sql.js";
import { spUrls, type SamlProviderConfig } from "./config.js";
import { spKeysOf, type SpKeys } from "./sp-keys.js";

/**
 * The service-provider side of SAML 2.0 sign-in with @node-saml/node-saml (docs/sso.md "SAML
 * 2.0"): SP-initiated requests over HTTP-Redirect, responses over HTTP-POST, single logout in
 * both directions, encrypted assertions and step-up (ForceAuthn). node-saml checks the signature
 * against the pinned certificates only, the issuer, audience, NotBefore/NotOnOrAfter and
 * InResponseTo, and decrypts; this module adds what it leaves to the caller: the Recipient, a
 * replay cache of assertion ids, the binding of a response to the browser that asked for it, and
 * for logout messages a required signature, Destination, InResponseTo and freshness. The caches
 * live in PostgreSQL (migrations 0110, 0240), so any replica can finish what another started.
 */

export type SamlProvider = { id: string; tenantId: string; config: SamlProviderConfig };

/** How long a request may wait for its response. */
const REQUEST_TTL_MS = 10 * 60_000;
const TRANSIENT = "urn:oasis:names:tc:SAML:2.0:nameid-format:transient";

const sha256 = (s: string) => createHash("sha256").update(s).digest();

/** What a request was for: a sign-in, the appliance's LogoutRequest, or a step-up (ForceAuthn) of an open session. */
export type SamlPurpose = "signin" | "logout" | "step_up";

/** The request a response answered, as `saml_requests` keeps it. */
export type AnsweredRequest = { purpose: SamlPurpose; sessionId: string | null; returnTo: string | null; createdAt: Date };

type RequestRow = {
  browser_hash: Buffer;
  created_at: Date;
  expires_at: Date;
  consumed_at: Date | null;
  purpose: SamlPurpose;
  session_id: string | null;
  return_to: string | null;
};

/**
 * node-saml's request-id cache, kept in `saml_requests`: saved when the request is made, found
 * (once, by the browser that made it, before it expires) when the response comes back. What a
 * failed lookup found is kept in `miss`, so the audit trail can say why.
 */
class RequestCache implements CacheProvider {
  miss: string | null = null;
  /** The request found by the last successful lookup. */
  found: AnsweredRequest | null = null;
  constructor(
    private readonly ctx: ApplianceContext,
    private readonly provider: SamlProvider,
    private readonly browserHash: Buffer | null,
    /** What a request saved now is for; which purposes an answer may name. */
    private readonly purpose: { saves?: SamlPurpose; sessionId?: string; returnTo?: string; accepts: SamlPurpose[] } = { accepts: ["signin", "step_up"] },
  ) {}

  private scope() {
    return { kind: "tenant", tenantId: this.provider.tenantId } as const;
  }

  async saveAsync(key: string, value: string): Promise<CacheItem | null> {
    if (!this.browserHash) throw new Error("a SAML request needs the browser's binding");
    const now = this.ctx.clock.now();
    await inScope(this.ctx.db.app, this.scope(), (t) =>
      t.exec(
        `INSERT INTO saml_requests (request_id, tenant_id, provider_id, browser_hash, created_at, expires_at, purpose, session_id, return_to) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9)`,
        [
          key,
          this.provider.tenantId,
          this.provider.id,
          this.browserHash,
          now,
          new Date(now.getTime() + REQUEST_TTL_MS),
          this.purpose.saves ?? "signin",
          this.purpose.sessionId ?? null,
          this.purpose.returnTo ?? null,
        ],
      ),
    );
    return { value, createdAt: now.getTime() };
  }

  async getAsync(key: string): Promise<string | null> {
    const [row] = await inScope(this.ctx.db.app, this.scope(), (t) =>
      t.rows<RequestRow>(`SELECT browser_hash, created_at, expires_at, consumed_at, purpose, session_id, return_to FROM saml_requests WHERE request_id = $1 AND provider_id = $2`, [
        key,
        this.provider.id,
      ]),
    );
    if (!row) this.miss = "InResponseTo names no request this appliance made for this provider";
    else if (!this.purpose.accepts.includes(row.purpose)) this.miss = `InResponseTo names a ${row.purpose} request, not a ${this.purpose.accepts.join(" or ")} request`;
    else if (row.consumed_at) this.miss = "replayed response: its request was already answered";
    else if (row.expires_at.getTime() <= this.ctx.clock.now().getTime()) this.miss = "the request expired before the response came";
    else if (!this.browserHash || !row.browser_hash.equals(this.browserHash)) this.miss = "the response came to another browser than the one that asked for it";
    else {
      this.found = { purpose: row.purpose, sessionId: row.session_id, returnTo: row.return_to, createdAt: row.created_at };
      // node-saml reads the value back as the request's time (it checks the age itself too).
      return row.created_at.toISOString();
    }
    return null;
  }

  async removeAsync(key: string | null): Promise<string | null> {
    if (key === null) return null;
    const now = this.ctx.clock.now();
    await inScope(this.ctx.db.app, this.scope(), async (t) => {
      await t.exec(`UPDATE saml_requests SET consumed_at = $3 WHERE request_id = $1 AND provider_id = $2 AND consumed_at IS NULL`, [key, this.provider.id, now]);
      // Expired requests of this provider go with it: the table holds only sign-ins in flight.
      await t.exec(`DELETE FROM saml_requests WHERE provider_id = $1 AND expires_at < $2`, [this.provider.id, new Date(now.getTime() - REQUEST_TTL_MS)]);
    });
    return key;
  }
}

async function samlFor(ctx: ApplianceContext, p: SamlProvider, cache: CacheProvider, keys: SpKeys, opts: { forceAuthn?: boolean; logout?: boolean } = {}): Promise<SAML> {
  // node-saml and its XML libraries load with the first SAML exchange, not with the module (every CLI command imports it).
  const { SAML, ValidateInResponseTo } = await import("@node-saml/node-saml");
  const c = p.config;
  const urls = spUrls(appliancePublicUrl(ctx), c, p.id);
  return new SAML({
    idpCert: c.idpCertificates,
    idpIssuer: c.idpEntityId,
    issuer: urls.entityId,
    audience: urls.entityId,
    callbackUrl: urls.acs,
    entryPoint: c.idpSsoUrl,
    // The assertion must be signed by a pinned certificate; a signature on the whole response alone is not enough.
    wantAssertionsSigned: true,
    wantAuthnResponseSigned: false,
    acceptedClockSkewMs: c.clockSkewSeconds * 1000,
    maxAssertionAgeMs: c.maxAssertionAgeMinutes * 60_000,
    // A LogoutResponse's InResponseTo is checked here (node-saml would look for a Response's).
    validateInResponseTo: c.allowIdpInitiated || opts.logout ? ValidateInResponseTo.ifPresent : ValidateInResponseTo.always,
    requestIdExpirationPeriodMs: REQUEST_TTL_MS,
    cacheProvider: cache,
    identifierFormat: null,
    disableRequestedAuthnContext: true,
    signatureAlgorithm: "sha256",
    generateUniqueId: () => `_${randomBytes(20).toString("hex")}`,
    // The SP signs what it sends (AuthnRequests, LogoutRequests, LogoutResponses) and decrypts encrypted assertions.
    privateKey: keys.signing.keyPem,
    decryptionPvk: keys.encryption.keyPem,
    logoutCallbackUrl: urls.slo,
    ...(c.idpSloUrl ? { logoutUrl: c.idpSloUrl } : {}),
    forceAuthn: opts.forceAuthn === true,
  });
}

/** The SP metadata document the IdP imports (entity id, ACS and SLO URLs, signed assertions wanted, the SP's signing and encryption certificates). */
export async function spMetadataXml(ctx: ApplianceContext, p: SamlProvider): Promise<string> {
  const keys = await spKeysOf(ctx, p);
  return (await samlFor(ctx, p, new RequestCache(ctx, p, null), keys)).generateServiceProviderMetadata(keys.encryption.certPem, keys.signing.certPem);
}

/**
 * Starts an SP-initiated sign-in: the IdP URL to send the browser to, and the browser-binding
 * token to set as a cookie (only its hash is stored with the request).
 */
export async function startSamlSignIn(
  ctx: ApplianceContext,
  p: SamlProvider,
  stepUp?: { sessionId: string; returnTo: string },
): Promise<{ redirectUrl: string; browserToken: string }> {
  const browserToken = randomBytes(32).toString("base64url");
  const cache = new RequestCache(ctx, p, sha256(browserToken), {
    saves: stepUp ? "step_up" : "signin",
    ...(stepUp ? { sessionId: stepUp.sessionId, returnTo: stepUp.returnTo } : {}),
    accepts: [],
  });
  // A step-up asks the IdP to sign the person in again whatever session it has (ForceAuthn, SAML core §3.4.1).
  const saml = await samlFor(ctx, p, cache, await spKeysOf(ctx, p), { forceAuthn: stepUp !== undefined });
  const redirectUrl = await saml.getAuthorizeUrlAsync("", undefined, {});
  return { redirectUrl, browserToken };
}

/** What a validated SAML response yields (the caller makes it an ExternalIdentity). */
export type SamlAssertion = {
  subject: string;
  username: string;
  email?: string;
  displayName?: string;
  groups: string[];
  acr?: string;
  claims: Record<string, unknown>;
  sessionIndex?: string;
  nameIdFormat?: string;
  /** When the IdP says it authenticated the person (AuthnStatement AuthnInstant). */
  authnInstant?: Date;
};

/** A validated response, and the request it answered (null for an IdP-initiated one). */
export type SamlOutcome = { ok: true; assertion: SamlAssertion; request: AnsweredRequest | null } | { ok: false; reason: string; request: AnsweredRequest | null };

type XmlJs = { [key: string]: XmlJs[] | string | Record<string, string> | undefined; _?: string; $?: Record<string, string> };

const first = (node: XmlJs | undefined, name: string): XmlJs | undefined => {
  const v = node?.[name];
  return Array.isArray(v) ? v[0] : undefined;
};

function textOf(v: unknown): string | undefined {
  if (typeof v === "string") return v;
  if (v && typeof v === "object" && "_" in v && typeof (v as XmlJs)._ === "string") return (v as XmlJs)._;
  return undefined;
}

function strings(v: unknown): string[] {
  const list = Array.isArray(v) ? v : v === undefined || v === null ? [] : [v];
  return list.map(textOf).filter((s): s is string => typeof s === "string" && s.length > 0);
}

/** Sorts node-saml's refusals into the reasons the audit trail records. */
function reasonOf(message: string): string {
  const m = message.replace(/\s+/g, " ").slice(0, 300);
  if (/signature/i.test(m)) return `signature not valid (unsigned, not signed by a pinned certificate, or altered): ${m}`;
  if (/expired|not yet valid|subject confirmation/i.test(m)) return `assertion outside its validity period: ${m}`;
  if (/audience/i.test(m)) return `audience mismatch: ${m}`;
  if (/issuer/i.test(m)) return `issuer mismatch: ${m}`;
  if (/InResponseTo/i.test(m)) return `unsolicited response (no matching request; IdP-initiated sign-in is off): ${m}`;
  if (/status code/i.test(m)) return `the IdP answered with an error status: ${m}`;
  return `response not valid: ${m}`;
}

function recipientsOf(assertion: XmlJs): string[] {
  const subject = first(assertion, "Subject");
  const confirmations = (subject?.SubjectConfirmation as XmlJs[] | undefined) ?? [];
  return confirmations.map((c) => first(c, "SubjectConfirmationData")?.$?.Recipient).filter((r): r is string => typeof r === "string");
}

/**
 * Validates a SAML response posted to the ACS. The refusal reasons are precise (for the audit
 * trail); the browser never sees them.
 */
export async function finishSamlSignIn(ctx: ApplianceContext, p: SamlProvider, input: { samlResponse: string; browserToken: string | null }): Promise<SamlOutcome> {
  const cache = new RequestCache(ctx, p, input.browserToken ? sha256(input.browserToken) : null);
  const saml = await samlFor(ctx, p, cache, await spKeysOf(ctx, p));
  let profile: Profile | null;
  try {
    ({ profile } = await saml.validatePostResponseAsync({ SAMLResponse: input.samlResponse }));
  } catch (err) {
    if (cache.miss) return { ok: false, reason: cache.miss, request: null };
    return { ok: false, reason: reasonOf(err instanceof Error ? err.message : String(err)), request: cache.found };
  }
  if (!profile) return { ok: false, reason: "response carried no assertion (a logout message?)", request: cache.found };
  // node-saml accepts either; a provider that requires encryption refuses a plain assertion, even a signed one.
  if (p.config.requireEncryptedAssertions && plainAssertionIn(input.samlResponse))
    return { ok: false, reason: "assertion not encrypted: this provider requires encrypted assertions (the SP metadata names the encryption certificate)", request: cache.found };
  const parsed = profile.getAssertion?.() as { Assertion?: XmlJs } | undefined;
  const assertion = parsed?.Assertion;
  const assertionId = assertion?.$?.ID;
  if (!assertion || !assertionId) return { ok: false, reason: "response not valid: the signed assertion has no ID", request: cache.found };

  // Recipient: the signed SubjectConfirmationData must name this provider's ACS URL.
  const acs = spUrls(appliancePublicUrl(ctx), p.config, p.id).acs;
  const recipients = recipientsOf(assertion);
  if (!recipients.includes(acs))
    return { ok: false, reason: `recipient mismatch: expected ${acs}, received ${recipients.join(", ").slice(0, 300) || "none"}`, request: cache.found };
  if (profile.nameIDFormat === TRANSIENT) return { ok: false, reason: "transient NameID: it cannot identify the same person twice", request: cache.found };

  // Replay: an assertion id is accepted once per provider until it expires, on every replica.
  const now = ctx.clock.now();
  const conditions = first(assertion, "Conditions");
  const notOnOrAfter = Date.parse(conditions?.$?.NotOnOrAfter ?? "");
  const keepUntil = new Date(
    Math.max(Number.isFinite(notOnOrAfter) ? notOnOrAfter : 0, now.getTime() + p.config.maxAssertionAgeMinutes * 60_000) + p.config.clockSkewSeconds * 1000,
  );
  const fresh = await inScope(ctx.db.app, { kind: "tenant", tenantId: p.tenantId }, async (t) => {
    await t.exec(`DELETE FROM saml_assertion_ids WHERE provider_id = $1 AND expires_at < $2`, [p.id, now]);
    return t.exec(`INSERT INTO saml_assertion_ids (provider_id, assertion_id, tenant_id, seen_at, expires_at) VALUES ($1, $2, $3, $4, $5) ON CONFLICT DO NOTHING`, [
      p.id,
      assertionId.slice(0, 200),
      p.tenantId,
      now,
      keepUntil,
    ]);
  });
  if (fresh === 0) return { ok: false, reason: "replayed assertion id", request: cache.found };

  const attributes = (profile.attributes ?? {}) as Record<string, unknown>;
  const c = p.config;
  const nameId = profile.nameID;
  const email = strings(attributes[c.emailAttribute])[0] ?? (/^[^@\s]+@[^@\s]+$/.test(nameId) ? nameId : undefined);
  const displayName = strings(attributes[c.displayNameAttribute])[0];
  const authnStatement = first(assertion, "AuthnStatement");
  const acr = textOf(first(first(authnStatement, "AuthnContext"), "AuthnContextClassRef"));
  const authnInstant = Date.parse(authnStatement?.$?.AuthnInstant ?? "");
  return {
    ok: true,
    request: cache.found,
    assertion: {
      subject: nameId,
      username: (c.usernameAttribute ? strings(attributes[c.usernameAttribute])[0] : undefined) ?? nameId,
      ...(email ? { email } : {}),
      ...(displayName ? { displayName } : {}),
      groups: strings(attributes[c.groupsAttribute]),
      ...(acr ? { acr } : {}),
      ...(profile.sessionIndex ? { sessionIndex: profile.sessionIndex } : {}),
      ...(profile.nameIDFormat ? { nameIdFormat: profile.nameIDFormat } : {}),
      ...(Number.isFinite(authnInstant) ? { authnInstant: new Date(authnInstant) } : {}),
      claims: { issuer: profile.issuer, nameIdFormat: profile.nameIDFormat, ...attributes },
    },
  };
}

type XmlNode = {
  localName: string | null;
  namespaceURI: string | null;
  textContent: string | null;
  childNodes: { length: number; item(i: number): XmlNode | null };
  getAttribute(name: string): string | null;
};

const PROTOCOL = "urn:oasis:names:tc:SAML:2.0:protocol";
const ASSERTION = "urn:oasis:names:tc:SAML:2.0:assertion";
const SUCCESS = "urn:oasis:names:tc:SAML:2.0:status:Success";

function parseXml(xml: string): XmlNode | null {
  if (/<!DOCTYPE/i.test(xml)) return null;
  const errors: string[] = [];
  const doc = new DOMParser({ errorHandler: { error: (m: string) => errors.push(m), fatalError: (m: string) => errors.push(m) } }).parseFromString(xml, "text/xml");
  return errors.length > 0 || !doc?.documentElement ? null : (doc.documentElement as unknown as XmlNode);
}

function childrenOf(el: XmlNode, ns: string, name: string): XmlNode[] {
  const out: XmlNode[] = [];
  for (let i = 0; i < el.childNodes.length; i++) {
    const c = el.childNodes.item(i);
    if (c && c.localName === name && c.namespaceURI === ns) out.push(c);
  }
  return out;
}

/** Whether the Response carries its assertion in the clear (a direct saml:Assertion child, not an EncryptedAssertion). */
function plainAssertionIn(samlResponse: string): boolean {
  const root = parseXml(Buffer.from(samlResponse, "base64").toString("utf8"));
  return !root || childrenOf(root, ASSERTION, "Assertion").length > 0;
}

/** Where the appliance's session came from at a SAML IdP (kept with the session at sign-in). */
export type SamlSessionHint = { nameId: string; nameIdFormat?: string; sessionIndex?: string };

const UNSPECIFIED = "urn:oasis:names:tc:SAML:1.1:nameid-format:unspecified";

/**
 * SP-initiated single logout: the IdP URL (its single logout service, HTTP-Redirect) with a
 * signed LogoutRequest for the person's IdP session, and the browser-binding token its
 * LogoutResponse must come back with. Null when the provider has no single logout URL.
 */
export async function startSamlLogout(ctx: ApplianceContext, p: SamlProvider, hint: SamlSessionHint): Promise<{ redirectUrl: string; browserToken: string } | null> {
  if (!p.config.idpSloUrl) return null;
  const browserToken = randomBytes(32).toString("base64url");
  const saml = await samlFor(ctx, p, new RequestCache(ctx, p, sha256(browserToken), { saves: "logout", accepts: [] }), await spKeysOf(ctx, p), { logout: true });
  const profile: Profile = {
    issuer: p.config.idpEntityId,
    nameID: hint.nameId,
    nameIDFormat: hint.nameIdFormat ?? UNSPECIFIED,
    ...(hint.sessionIndex ? { sessionIndex: hint.sessionIndex } : {}),
  };
  return { redirectUrl: await saml.getLogoutUrlAsync(profile, "", {}), browserToken };
}

/** A logout message the IdP sent to the SLO endpoint, as the route received it. */
export type SamlLogoutInput = {
  binding: "redirect" | "post";
  samlRequest: string | null;
  samlResponse: string | null;
  relayState: string | null;
  /** HTTP-Redirect: the query string as sent (the signature covers it byte for byte), and its Signature and SigAlg. */
  rawQuery?: string;
  signature?: string | null;
  sigAlg?: string | null;
  browserToken: string | null;
};

export type SamlLogoutOutcome =
  | { ok: true; kind: "response" }
  | { ok: true; kind: "request"; nameId: string; sessionIndex: string | null; messageId: string; keepUntil: Date; answer: (success: boolean) => Promise<string | null> }
  | { ok: false; reason: string };

/** Largest inflated HTTP-Redirect message accepted (a logout message is a few KiB). */
const MAX_INFLATED = 256 * 1024;

/**
 * Validates a LogoutResponse (to the appliance's LogoutRequest) or an IdP-initiated LogoutRequest
 * posted or redirected to the SLO endpoint. node-saml checks the signature against the pinned
 * certificates, the issuer and the request's NotOnOrAfter; an unsigned redirect message would pass
 * there, so a signature is required here, as are the Destination (this endpoint), an IssueInstant
 * within the assertion age and skew, and for a response a Success status and an InResponseTo naming
 * a logout request this appliance made, from the same browser, not yet answered.
 */
export async function acceptSamlLogoutMessage(ctx: ApplianceContext, p: SamlProvider, input: SamlLogoutInput): Promise<SamlLogoutOutcome> {
  const message = input.samlRequest ?? input.samlResponse;
  if (!message) return { ok: false, reason: "neither SAMLRequest nor SAMLResponse in the message" };
  const isRequest = input.samlRequest !== null;
  let xml: string;
  try {
    const raw = Buffer.from(message, "base64");
    xml = (input.binding === "redirect" ? inflateRawSync(raw, { maxOutputLength: MAX_INFLATED }) : raw).toString("utf8");
  } catch {
    return { ok: false, reason: "the message is not a deflated, base64-encoded SAML message" };
  }
  const root = parseXml(xml);
  const expected = isRequest ? "LogoutRequest" : "LogoutResponse";
  if (!root || root.localName !== expected || root.namespaceURI !== PROTOCOL) return { ok: false, reason: `the message is not a ${expected}` };
  if (input.binding === "redirect" && (!input.signature || !input.sigAlg)) return { ok: false, reason: "unsigned message (HTTP-Redirect without Signature)" };

  const cache = new RequestCache(ctx, p, input.browserToken ? sha256(input.browserToken) : null, { accepts: ["logout"] });
  const saml = await samlFor(ctx, p, cache, await spKeysOf(ctx, p), { logout: true });
  let profile: Profile | null = null;
  try {
    if (input.binding === "redirect") {
      const query: Record<string, string> = { [isRequest ? "SAMLRequest" : "SAMLResponse"]: message, SigAlg: input.sigAlg!, Signature: input.signature! };
      if (input.relayState !== null) query.RelayState = input.relayState;
      ({ profile } = await saml.validateRedirectAsync(query, input.rawQuery ?? ""));
    } else if (isRequest) {
      ({ profile } = await saml.validatePostRequestAsync({ SAMLRequest: message }));
    } else {
      await saml.validatePostResponseAsync({ SAMLResponse: message });
    }
  } catch (err) {
    if (cache.miss) return { ok: false, reason: cache.miss };
    return { ok: false, reason: reasonOf(err instanceof Error ? err.message : String(err)) };
  }

  const slo = spUrls(appliancePublicUrl(ctx), p.config, p.id).slo;
  const destination = root.getAttribute("Destination");
  if (destination !== slo) return { ok: false, reason: `destination mismatch: expected ${slo}, received ${(destination ?? "none").slice(0, 300)}` };
  const issuer = childrenOf(root, ASSERTION, "Issuer")[0]?.textContent?.trim();
  if (issuer !== p.config.idpEntityId) return { ok: false, reason: `issuer mismatch: ${(issuer ?? "none").slice(0, 300)}` };
  const now = ctx.clock.now().getTime();
  const skew = p.config.clockSkewSeconds * 1000;
  const maxAge = p.config.maxAssertionAgeMinutes * 60_000;
  const issued = Date.parse(root.getAttribute("IssueInstant") ?? "");
  if (!Number.isFinite(issued) || issued > now + skew || issued < now - maxAge - skew) return { ok: false, reason: "message outside its validity period (IssueInstant)" };

  if (!isRequest) {
    const status = childrenOf(childrenOf(root, PROTOCOL, "Status")[0] ?? root, PROTOCOL, "StatusCode")[0]?.getAttribute("Value");
    if (status !== SUCCESS) return { ok: false, reason: `the IdP answered with status ${(status ?? "none").slice(0, 120)}` };
    const inResponseTo = root.getAttribute("InResponseTo");
    if (!inResponseTo) return { ok: false, reason: "unsolicited LogoutResponse (no InResponseTo)" };
    if (!(await cache.getAsync(inResponseTo))) return { ok: false, reason: cache.miss ?? "InResponseTo not valid" };
    await cache.removeAsync(inResponseTo);
    return { ok: true, kind: "response" };
  }

  const messageId = root.getAttribute("ID");
  if (!profile?.nameID || !messageId) return { ok: false, reason: "the LogoutRequest names no person (NameID) or has no ID" };
  const request = profile;
  return {
    ok: true,
    kind: "request",
    nameId: profile.nameID,
    sessionIndex: typeof profile.sessionIndex === "string" ? profile.sessionIndex : null,
    // Kept with a "saml:" prefix in a column of at most 200 characters.
    messageId: messageId.slice(0, 190),
    keepUntil: new Date(issued + maxAge + 2 * skew),
    // The signed LogoutResponse goes to the IdP's single logout URL (never to an address the message names).
    answer: async (success) => (p.config.idpSloUrl ? saml.getLogoutResponseUrlAsync(request, input.relayState ?? "", {}, success) : null),
  };
}
