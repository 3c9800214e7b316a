import type { ApplianceContext } from "../../context.js";
import type { RequestMeta } from "../../kernel/request-meta.js";
import type { ExternalIdentity } from "../identity.js";
import { inScope } from "../../db/sql.js";
import { completeExternalSignIn, completeIdpStepUp, refuseExternalSignIn, type ExternalSignInOutcome } from "../signin.js";
import { acceptLogoutMessageOnce, auditRefusedIdpLogout, endIdpSessions } from "../idp-logout.js";
import { loadProvider, type LoadedProvider } from "../providers.js";
import type { SamlProviderConfig } from "./config.js";
import { acceptSamlLogoutMessage, finishSamlSignIn, spMetadataXml, startSamlLogout, startSamlSignIn, type SamlLogoutInput, type SamlProvider, type SamlSessionHint } from "./sp.js";
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
  return await spMetadataXml(ctx, p);
}

/** Starts an SP-initiated sign-in: where to send the browser, and the cookie value that binds the answer to it. */
export async function beginSamlSignIn(ctx: ApplianceContext, id: string, meta: RequestMeta): Promise<{ redirectUrl: string; browserToken: string }> {
  const p = await samlProvider(ctx, id);
  if (!p) return refuseExternalSignIn(ctx, { providerId: null, tenantId: null }, "unknown SAML provider", meta);
  if (!p.loaded.enabled) return refuseExternalSignIn(ctx, { providerId: p.id, tenantId: p.tenantId }, "identity provider is disabled", meta);
  return startSamlSignIn(ctx, p);
}

/** Starts a step-up at the IdP for an open session (ForceAuthn): where to send the browser, and its binding cookie value. */
export async function beginSamlStepUp(ctx: ApplianceContext, id: string, stepUp: { sessionId: string; returnTo: string }): Promise<{ redirectUrl: string; browserToken: string }> {
  const p = await samlProvider(ctx, id);
  if (!p) throw new NotFound("no such SAML provider");
  return startSamlSignIn(ctx, p, stepUp);
}

export type SamlAcsOutcome = { kind: "signed-in"; outcome: ExternalSignInOutcome; tenantId: string } | { kind: "stepped-up"; returnTo: string };

/**
 * The ACS: validates the posted response (./sp.ts) and, as the request it answers says, signs the
 * person in through the shared path or completes a step-up of their open session. Any failed
 * check is audited with its reason (`auth.login`, or `auth.mfa.step_up` for a step-up) and ends in
 * the one generic refusal.
 */
export async function completeSamlSignIn(
  ctx: ApplianceContext,
  id: string,
  input: { samlResponse: string | null; browserToken: string | null },
  meta: RequestMeta,
): Promise<SamlAcsOutcome> {
  const p = await samlProvider(ctx, id);
  if (!p) return refuseExternalSignIn(ctx, { providerId: null, tenantId: null }, "unknown SAML provider", meta);
  const who = { providerId: p.id, tenantId: p.tenantId };
  if (!p.loaded.enabled) return refuseExternalSignIn(ctx, who, "identity provider is disabled", meta);
  if (!input.samlResponse) return refuseExternalSignIn(ctx, who, "saml: no SAMLResponse in the posted form", meta);
  const result = await finishSamlSignIn(ctx, p, { samlResponse: input.samlResponse, browserToken: input.browserToken });
  const action = result.request?.purpose === "step_up" ? "auth.mfa.step_up" : "auth.login";
  if (!result.ok) return refuseExternalSignIn(ctx, who, `saml: ${result.reason}`, meta, action);
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
  const request = result.request;
  if (request?.purpose === "step_up") {
    // An IdP that ignored ForceAuthn answers with its old sign-in: AuthnInstant before the step-up began.
    const skewMs = p.config.clockSkewSeconds * 1000;
    if (!a.authnInstant || a.authnInstant.getTime() < request.createdAt.getTime() - skewMs)
      return refuseExternalSignIn(ctx, who, "saml: step-up: the IdP did not sign the person in again (AuthnInstant is before the step-up began)", meta, action);
    await completeIdpStepUp(ctx, request.sessionId!, identity, meta);
    return { kind: "stepped-up", returnTo: request.returnTo ?? "/" };
  }
  const outcome = await completeExternalSignIn(ctx, identity, meta, {
    idpSession: { nameId: a.subject, ...(a.nameIdFormat ? { nameIdFormat: a.nameIdFormat } : {}), ...(a.sessionIndex ? { sessionIndex: a.sessionIndex } : {}) },
  });
  return { kind: "signed-in", outcome, tenantId: p.tenantId };
}

/**
 * Signing out of a session made through a SAML provider: the IdP's single logout URL with a
 * signed LogoutRequest, and the binding cookie value its answer must bring back; null when the
 * provider has no single logout URL or the session kept no NameID. Read before the session ends.
 */
export async function samlSignOutUrl(
  ctx: ApplianceContext,
  providerId: string,
  hint: Partial<SamlSessionHint> | null,
): Promise<{ redirectUrl: string; browserToken: string } | null> {
  const p = await samlProvider(ctx, providerId);
  if (!p || !hint?.nameId) return null;
  return startSamlLogout(ctx, p, { ...hint, nameId: hint.nameId });
}

/**
 * The SLO endpoint: a LogoutResponse to the appliance's LogoutRequest (the person is already
 * signed out here; the browser goes to the sign-in page), or a LogoutRequest from the IdP, which
 * ends the person's sessions made through that IdP session (SessionIndex) or through this
 * provider (NameID alone) on every replica, once per message id, and is answered with a signed
 * LogoutResponse at the IdP's single logout URL. Where the browser goes next; a refusal is
 * audited (`auth.logout`, failure, `sso: saml: single logout: …`) and sends it to the sign-in page
 * with the reference.
 */
export async function acceptSamlLogout(
  ctx: ApplianceContext,
  id: string,
  input: SamlLogoutInput,
  meta: RequestMeta,
): Promise<{ ok: true; location: string } | { ok: false; reference: string | null }> {
  const p = await samlProvider(ctx, id);
  const refuse = async (reason: string) => {
    await auditRefusedIdpLogout(ctx, p, `saml: single logout: ${reason}`, meta);
    return { ok: false as const, reference: meta.requestId ?? null };
  };
  if (!p) return refuse("unknown SAML provider");
  const checked = await acceptSamlLogoutMessage(ctx, p, input);
  if (!checked.ok) return refuse(checked.reason);
  if (checked.kind === "response") return { ok: true, location: "/#/login" };
  const ended = await inScope(ctx.db.app, { kind: "tenant", tenantId: p.tenantId }, async (t) => {
    if (!(await acceptLogoutMessageOnce(ctx, t, p, `saml:${checked.messageId}`, checked.keepUntil))) return null;
    return endIdpSessions(
      ctx,
      t,
      p,
      { sql: "s.idp_session ->> 'nameId' = $4 AND ($5::text IS NULL OR s.idp_session ->> 'sessionIndex' = $5)", params: [checked.nameId, checked.sessionIndex] },
      "signed out at the identity provider (SAML single logout)",
      (n) => `single logout from saml provider ${p.id}: ${n} session(s) ended (${checked.sessionIndex ? "NameID+SessionIndex" : "NameID"})`,
      meta,
    );
  });
  if (ended === null) return refuse("replayed LogoutRequest (its ID was already accepted)");
  return { ok: true, location: (await checked.answer(true)) ?? "/#/login" };
}
