import { createHash, randomBytes } from "node:crypto";
import { SAML, ValidateInResponseTo, type CacheItem, type CacheProvider, type Profile } from "@node-saml/node-saml";
import { appliancePublicUrl } from "../../config/public-url.js";
import type { ApplianceContext } from "../../context.js";
import { inScope } from "../../db/sql.js";
import { spUrls, type SamlProviderConfig } from "./config.js";

/**
 * The service-provider side of SAML 2.0 sign-in with @node-saml/node-saml (docs/sso.md "SAML
 * 2.0"): SP-initiated requests over HTTP-Redirect, responses over HTTP-POST. node-saml checks the
 * signature against the pinned certificates only, the issuer, audience, NotBefore/NotOnOrAfter
 * and InResponseTo; this module adds what it leaves to the caller: the Recipient, a replay cache of
 * assertion ids, and the binding of a response to the browser that asked for it. Both caches live
 * in PostgreSQL (migration 0110), so any replica can finish a sign-in another one started.
 */

export type SamlProvider = { id: string; tenantId: string; config: SamlProviderConfig };

/** How long a request may wait for its response. */
const REQUEST_TTL_MS = 10 * 60_000;
const TRANSIENT = "urn:oasis:names:tc:SAML:2.0:nameid-format:transient";

const sha256 = (s: string) => createHash("sha256").update(s).digest();

type RequestRow = { browser_hash: Buffer; created_at: Date; expires_at: Date; consumed_at: Date | null; test_id: string | null };

/**
 * node-saml's request-id cache, kept in `saml_requests`: saved when the request is made, found
 * (once, by the browser that made it, before it expires) when the response comes back. What a
 * failed lookup found is kept in `miss`, so the audit trail can say why.
 */
class RequestCache implements CacheProvider {
  miss: string | null = null;
  /** The test sign-in the answered request was made for (null: a real sign-in). */
  answeredTest: string | null = null;
  constructor(
    private readonly ctx: ApplianceContext,
    private readonly provider: SamlProvider,
    private readonly browserHash: Buffer | null,
    private readonly testId: string | null = null,
  ) {}

  private scope() {
    return { kind: "tenant", tenantId: this.provider.tenantId } as const;
  }

  async saveAsync(key: string, value: string): Promise<CacheItem | null> {
    if (!this.browserHash) throw new Error("a SAML request needs the browser's binding");
    const now = this.ctx.clock.now();
    await inScope(this.ctx.db.app, this.scope(), (t) =>
      t.exec(`INSERT INTO saml_requests (request_id, tenant_id, provider_id, browser_hash, created_at, expires_at, test_id) VALUES ($1, $2, $3, $4, $5, $6, $7)`, [
        key,
        this.provider.tenantId,
        this.provider.id,
        this.browserHash,
        now,
        new Date(now.getTime() + REQUEST_TTL_MS),
        this.testId,
      ]),
    );
    return { value, createdAt: now.getTime() };
  }

  async getAsync(key: string): Promise<string | null> {
    const [row] = await inScope(this.ctx.db.app, this.scope(), (t) =>
      t.rows<RequestRow>(`SELECT browser_hash, created_at, expires_at, consumed_at, test_id FROM saml_requests WHERE request_id = $1 AND provider_id = $2`, [
        key,
        this.provider.id,
      ]),
    );
    this.answeredTest = row?.test_id ?? null;
    if (!row) this.miss = "InResponseTo names no request this appliance made for this provider";
    else if (row.consumed_at) this.miss = "replayed response: its request was already answered";
    else if (row.expires_at.getTime() <= this.ctx.clock.now().getTime()) this.miss = "the request expired before the response came";
    else if (!this.browserHash || !row.browser_hash.equals(this.browserHash)) this.miss = "the response came to another browser than the one that asked for it";
    // node-saml reads the value back as the request's time (it checks the age itself too).
    else return row.created_at.toISOString();
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

function samlFor(ctx: ApplianceContext, p: SamlProvider, cache: CacheProvider): SAML {
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
    validateInResponseTo: c.allowIdpInitiated ? ValidateInResponseTo.ifPresent : ValidateInResponseTo.always,
    requestIdExpirationPeriodMs: REQUEST_TTL_MS,
    cacheProvider: cache,
    identifierFormat: null,
    disableRequestedAuthnContext: true,
    signatureAlgorithm: "sha256",
    generateUniqueId: () => `_${randomBytes(20).toString("hex")}`,
  });
}

/** The SP metadata document the IdP imports (entity id, ACS URL, signed assertions wanted). */
export function spMetadataXml(ctx: ApplianceContext, p: SamlProvider): string {
  return samlFor(ctx, p, new RequestCache(ctx, p, null)).generateServiceProviderMetadata(null, null);
}

/**
 * Starts an SP-initiated sign-in: the IdP URL to send the browser to, and the browser-binding
 * token to set as a cookie (only its hash is stored with the request).
 */
export async function startSamlSignIn(
  ctx: ApplianceContext,
  p: SamlProvider,
  test?: { browserToken: string; testId: string },
): Promise<{ redirectUrl: string; browserToken: string }> {
  const browserToken = test?.browserToken ?? randomBytes(32).toString("base64url");
  const saml = samlFor(ctx, p, new RequestCache(ctx, p, sha256(browserToken), test?.testId ?? null));
  // A test's RelayState names it, so a failed test can be shown to the admin who started it.
  const redirectUrl = await saml.getAuthorizeUrlAsync(test ? `test:${test.testId}` : "", undefined, {});
  return { redirectUrl, browserToken };
}

/** The SHA-256 of a browser-binding token, as request rows and test records keep it. */
export const browserHashOf = (token: string): Buffer => sha256(token);

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
};

/** `testId`: the answered request was made for that test sign-in (null: a real sign-in, or unknown when the response failed before its request was found). */
export type SamlOutcome = ({ ok: true; assertion: SamlAssertion } | { ok: false; reason: string }) & { testId?: string | null };

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
  const outcome = await validateResponse(ctx, p, cache, input.samlResponse);
  return { ...outcome, testId: cache.answeredTest };
}

async function validateResponse(ctx: ApplianceContext, p: SamlProvider, cache: RequestCache, samlResponse: string): Promise<SamlOutcome> {
  const saml = samlFor(ctx, p, cache);
  let profile: Profile | null;
  try {
    ({ profile } = await saml.validatePostResponseAsync({ SAMLResponse: samlResponse }));
  } catch (err) {
    if (cache.miss) return { ok: false, reason: cache.miss };
    return { ok: false, reason: reasonOf(err instanceof Error ? err.message : String(err)) };
  }
  if (!profile) return { ok: false, reason: "response carried no assertion (a logout message?)" };
  const parsed = profile.getAssertion?.() as { Assertion?: XmlJs } | undefined;
  const assertion = parsed?.Assertion;
  const assertionId = assertion?.$?.ID;
  if (!assertion || !assertionId) return { ok: false, reason: "response not valid: the signed assertion has no ID" };

  // Recipient: the signed SubjectConfirmationData must name this provider's ACS URL.
  const acs = spUrls(appliancePublicUrl(ctx), p.config, p.id).acs;
  const recipients = recipientsOf(assertion);
  if (!recipients.includes(acs)) return { ok: false, reason: `recipient mismatch: expected ${acs}, received ${recipients.join(", ").slice(0, 300) || "none"}` };
  if (profile.nameIDFormat === TRANSIENT) return { ok: false, reason: "transient NameID: it cannot identify the same person twice" };

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
  if (fresh === 0) return { ok: false, reason: "replayed assertion id" };

  const attributes = (profile.attributes ?? {}) as Record<string, unknown>;
  const c = p.config;
  const nameId = profile.nameID;
  const email = strings(attributes[c.emailAttribute])[0] ?? (/^[^@\s]+@[^@\s]+$/.test(nameId) ? nameId : undefined);
  const displayName = strings(attributes[c.displayNameAttribute])[0];
  const acr = textOf(first(first(first(assertion, "AuthnStatement"), "AuthnContext"), "AuthnContextClassRef"));
  return {
    ok: true,
    assertion: {
      subject: nameId,
      username: (c.usernameAttribute ? strings(attributes[c.usernameAttribute])[0] : undefined) ?? nameId,
      ...(email ? { email } : {}),
      ...(displayName ? { displayName } : {}),
      groups: strings(attributes[c.groupsAttribute]),
      ...(acr ? { acr } : {}),
      ...(profile.sessionIndex ? { sessionIndex: profile.sessionIndex } : {}),
      ...(profile.nameIDFormat ? { nameIdFormat: profile.nameIDFormat } : {}),
      claims: { issuer: profile.issuer, nameIdFormat: profile.nameIDFormat, ...attributes },
    },
  };
}
