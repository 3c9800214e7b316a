import type { ApplianceContext } from "../../context.js";
import type { RequestMeta } from "../../kernel/request-meta.js";
import type { ExternalIdentity } from "../identity.js";
import { completeExternalSignIn, refuseExternalSignIn, type ExternalSignInOutcome } from "../signin.js";
import { loadProvider, type LoadedProvider } from "../providers.js";
import type { SamlProviderConfig } from "./config.js";
import { finishSamlSignIn, spMetadataXml, startSamlSignIn, type SamlProvider } from "./sp.js";
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
 * The ACS: validates the posted response (./sp.ts) and signs the person in through the shared
 * path. Any failed check is audited with its reason and ends in the one generic refusal.
 */
export async function completeSamlSignIn(
  ctx: ApplianceContext,
  id: string,
  input: { samlResponse: string | null; browserToken: string | null },
  meta: RequestMeta,
): Promise<ExternalSignInOutcome & { tenantId: string }> {
  const p = await samlProvider(ctx, id);
  if (!p) return refuseExternalSignIn(ctx, { providerId: null, tenantId: null }, "unknown SAML provider", meta);
  const who = { providerId: p.id, tenantId: p.tenantId };
  if (!p.loaded.enabled) return refuseExternalSignIn(ctx, who, "identity provider is disabled", meta);
  if (!input.samlResponse) return refuseExternalSignIn(ctx, who, "saml: no SAMLResponse in the posted form", meta);
  const result = await finishSamlSignIn(ctx, p, { samlResponse: input.samlResponse, browserToken: input.browserToken });
  if (!result.ok) return refuseExternalSignIn(ctx, who, `saml: ${result.reason}`, meta);
  const a = result.assertion;
  const identity: ExternalIdentity = {
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
  const outcome = await completeExternalSignIn(ctx, identity, meta, {
    idpSession: { nameId: a.subject, ...(a.sessionIndex ? { sessionIndex: a.sessionIndex } : {}) },
  });
  return { ...outcome, tenantId: p.tenantId };
}
