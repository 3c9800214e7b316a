import { randomBytes } from "node:crypto";
import type { ApplianceContext } from "../../context.js";
import { inScope, type Tx } from "../../db/sql.js";
import type { Actor } from "../../kernel/actor.js";
import type { TestResultRes } from "../schema.js";
import { failedTest, openTestRecord, saveTestResult, testIdentityView } from "../tests.js";
import type { RequestMeta } from "../../kernel/request-meta.js";
import type { ExternalIdentity } from "../identity.js";
import { completeExternalSignIn, refuseExternalSignIn, type ExternalSignInOutcome } from "../signin.js";
import { loadProvider, type LoadedProvider } from "../providers.js";
import type { SamlProviderConfig } from "./config.js";
import { browserHashOf, finishSamlSignIn, spMetadataXml, startSamlSignIn, type SamlAssertion, type SamlProvider } from "./sp.js";
import { NotFound } from "../../kernel/errors.js";

/** A SAML provider by id, for the public SP routes (metadata, login, ACS); null when there is none. */
async function samlProvider(ctx: ApplianceContext, id: string): Promise<(SamlProvider & { loaded: LoadedProvider }) | null> {
  const p = await loadProvider(ctx, id);
  if (!p || p.kind !== "saml") return null;
  return { id: p.id, tenantId: p.tenantId, config: p.config as SamlProviderConfig, loaded: p };
}

/** The SP metadata of a SAML provider (public: the IdP's administrators import it). */
export async function samlMetadata(ctx: ApplianceContext, id: string): Promise<string> {
  const p = await samlProvider(ctx, id);
  if (!p) throw new NotFound("no such SAML provider");
  return spMetadataXml(ctx, p);
}

/** Starts an SP-initiated sign-in: where to send the browser, and the cookie value that binds the answer to it. */
export async function beginSamlSignIn(ctx: ApplianceContext, id: string, meta: RequestMeta): Promise<{ redirectUrl: string; browserToken: string }> {
  const p = await samlProvider(ctx, id);
  if (!p) return refuseExternalSignIn(ctx, { providerId: null, tenantId: null }, "unknown SAML provider", meta);
  if (!p.loaded.enabled) return refuseExternalSignIn(ctx, { providerId: p.id, tenantId: p.tenantId }, "identity provider is disabled", meta);
  return startSamlSignIn(ctx, p);
}

/**
 * An admin's test sign-in through a SAML provider (also a disabled one): an AuthnRequest that
 * names the test record, sent with the browser-binding cookie; the IdP's answer fills the test
 * (completeSamlSignIn) and makes no session.
 */
export async function startSamlTest(ctx: ApplianceContext, actor: Actor, id: string): Promise<{ testId: string; url: string; browserToken: string }> {
  const p = await samlProvider(ctx, id);
  if (!p || p.tenantId !== actor.tenantId) throw new NotFound("no such identity provider in your tenant");
  const browserToken = randomBytes(32).toString("base64url");
  const test = await inScope(ctx.db.app, { kind: "tenant", tenantId: p.tenantId }, (t) => openTestRecord(ctx, t, p, actor, browserHashOf(browserToken)));
  const { redirectUrl } = await startSamlSignIn(ctx, p, { browserToken, testId: test.id });
  return { testId: test.id, url: redirectUrl, browserToken };
}

/**
 * The test a response claims by its RelayState (`test:<id>`), when the browser posting it is the
 * one that started that test and it has no result yet: so a response that failed before its
 * request was found still shows the admin why. Null otherwise.
 */
async function claimedTest(ctx: ApplianceContext, p: SamlProvider, relayState: string | null, browserToken: string | null): Promise<string | null> {
  const id = /^test:([0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12})$/.exec(relayState ?? "")?.[1];
  if (!id || !browserToken) return null;
  const [row] = await inScope(ctx.db.app, { kind: "tenant", tenantId: p.tenantId }, (t) =>
    t.rows<{ id: string }>("SELECT id FROM sso_login_states WHERE id = $1 AND provider_id = $2 AND purpose = 'test' AND browser_hash = $3 AND test_result IS NULL", [
      id,
      p.id,
      browserHashOf(browserToken),
    ]),
  );
  return row?.id ?? null;
}

export type SamlAcsOutcome = { kind: "signed-in"; outcome: ExternalSignInOutcome & { tenantId: string } } | { kind: "tested"; providerId: string; testId: string };

/**
 * The ACS: validates the posted response (./sp.ts) and signs the person in through the shared
 * path. Any failed check is audited with its reason and ends in the one generic refusal. A
 * response to a test sign-in's request fills the test (what arrived, or why it failed) instead.
 */
export async function completeSamlSignIn(
  ctx: ApplianceContext,
  id: string,
  input: { samlResponse: string | null; browserToken: string | null; relayState?: string | null },
  meta: RequestMeta,
): Promise<SamlAcsOutcome> {
  const p = await samlProvider(ctx, id);
  if (!p) return refuseExternalSignIn(ctx, { providerId: null, tenantId: null }, "unknown SAML provider", meta);
  const who = { providerId: p.id, tenantId: p.tenantId };
  const claimed = await claimedTest(ctx, p, input.relayState ?? null, input.browserToken);
  const tested = async (testId: string, result: (t: Tx) => Promise<TestResultRes>): Promise<SamlAcsOutcome> => {
    await saveTestResult(ctx, { id: testId, tenantId: p.tenantId, providerId: p.id }, result);
    return { kind: "tested", providerId: p.id, testId };
  };
  if (!input.samlResponse) {
    if (claimed) return tested(claimed, async () => failedTest("saml: no SAMLResponse in the posted form"));
    return refuseExternalSignIn(ctx, who, "saml: no SAMLResponse in the posted form", meta);
  }
  if (!claimed && !p.loaded.enabled) return refuseExternalSignIn(ctx, who, "identity provider is disabled", meta);
  const result = await finishSamlSignIn(ctx, p, { samlResponse: input.samlResponse, browserToken: input.browserToken });
  // The request answered decides whether this is a test; a test is never a sign-in.
  const testId = result.testId ?? (result.ok ? null : claimed);
  if (testId) {
    if (!result.ok) return tested(testId, async () => failedTest(`saml: ${result.reason}`));
    return tested(testId, async (t) => ({ status: "received", error: null, identity: await testIdentityView(t, identityOf(p, result.assertion)) }));
  }
  if (!p.loaded.enabled) return refuseExternalSignIn(ctx, who, "identity provider is disabled", meta);
  if (!result.ok) return refuseExternalSignIn(ctx, who, `saml: ${result.reason}`, meta);
  const a = result.assertion;
  const outcome = await completeExternalSignIn(ctx, identityOf(p, a), meta, {
    idpSession: { nameId: a.subject, ...(a.sessionIndex ? { sessionIndex: a.sessionIndex } : {}) },
  });
  return { kind: "signed-in", outcome: { ...outcome, tenantId: p.tenantId } };
}

/** A validated assertion as the shared sign-in path takes it: the NameID is the subject, AuthnContextClassRef the acr. */
function identityOf(p: SamlProvider, a: SamlAssertion): ExternalIdentity {
  return {
    providerId: p.id,
    tenantId: p.tenantId,
    subject: a.subject,
    username: a.username,
    ...(a.email ? { email: a.email } : {}),
    ...(a.displayName ? { displayName: a.displayName } : {}),
    groups: a.groups,
    claims: a.claims,
    authnContext: a.acr ? { acr: a.acr } : {},
  };
}
