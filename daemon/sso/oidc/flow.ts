import { randomBytes, createHash } from "node:crypto";
import * as oidc from "openid-client";
import type { ApplianceContext } from "../../context.js";
import { inScope } from "../../db/sql.js";
import { recordAuthEvent } from "../../audit/append.js";
import type { Actor } from "../../kernel/actor.js";
import { NotFound, Unavailable } from "../../kernel/errors.js";
import type { RequestMeta } from "../../kernel/request-meta.js";
import type { ExternalIdentity } from "../identity.js";
import { loadProvider, type LoadedProvider } from "../providers.js";
import { failedTest, saveTestResult, testIdentityView } from "../tests.js";
import { openSsoValue, sealSsoValue } from "../secrets.js";
import { completeExternalSignIn, completeIdpStepUp, refuseExternalSignIn, type ExternalSignInOutcome } from "../signin.js";
import { oidcConfiguration } from "./client.js";
import type { OidcConfig, OidcSecrets } from "./settings.js";

/**
 * OpenID Connect sign-in (authorization code flow with PKCE, OpenID Connect Core 1.0 §3.1 and
 * RFC 7636). The state, nonce and PKCE verifier live in a short-lived server-side record
 * (`sso_login_states`), found by the state's SHA-256, used once, and bound to the browser that
 * started the sign-in by a cookie (so a sign-in started by someone else cannot be completed in
 * your browser: login CSRF). openid-client validates the rest: the `iss` response parameter
 * (RFC 9207, mix-up), the ID token's signature with the algorithm from the IdP's metadata (never
 * `none`), issuer, audience, expiry within the clock-skew bound, and nonce.
 */
export const BROWSER_COOKIE = "__Host-wardkeep_sso";

type Oidc = LoadedProvider<OidcConfig, OidcSecrets>;
type InFlight = { nonce: string; verifier: string; returnTo?: string };
type Purpose = "signin" | "test" | "step_up";

const sha256 = (v: string) => createHash("sha256").update(v).digest();

export const oidcRedirectUri = (base: string, providerId: string) => `${base}/api/v1/sso/oidc/${providerId}/callback`;

/** SameSite=Lax: the cookie must come back on the IdP's top-level redirect to the callback, which is a cross-site navigation. */
export function browserCookie(value: string, maxAgeSeconds: number): string {
  return `${BROWSER_COOKIE}=${value}; Path=/; Secure; HttpOnly; SameSite=Lax; Max-Age=${maxAgeSeconds}`;
}

async function asOidc(ctx: ApplianceContext, providerId: string): Promise<Oidc | null> {
  const p = await loadProvider(ctx, providerId);
  return p && p.kind === "oidc" ? (p as unknown as Oidc) : null;
}

/**
 * Begins a sign-in (or an admin's test sign-in, or a signed-in person's step-up): records state,
 * nonce and verifier, and returns the IdP's authorization URL and the browser-binding cookie. A
 * step-up asks the IdP to sign the person in again whatever session it has (`prompt=login`) and
 * to say when it did (`max_age=0`, so the ID token carries `auth_time`; OpenID Connect Core §3.1.2.1).
 */
export async function startOidcSignIn(
  ctx: ApplianceContext,
  providerId: string,
  opts: { base: string; purpose: Purpose; startedBy?: Actor; sessionId?: string; returnTo?: string; meta: RequestMeta },
): Promise<{ url: string; cookie: string; stateId: string }> {
  const provider = await asOidc(ctx, providerId);
  if (!provider || (opts.purpose !== "test" && !provider.enabled)) throw new NotFound("no such sign-in provider");
  if (opts.purpose !== "signin" && provider.tenantId !== opts.startedBy?.tenantId) throw new NotFound("no such identity provider in your tenant");
  let config: oidc.Configuration;
  try {
    config = await oidcConfiguration(ctx, provider);
  } catch (err) {
    await auditUnreachable(ctx, provider, err, opts.meta);
    throw new Unavailable("the identity provider cannot be reached; try again later");
  }
  const state = oidc.randomState();
  const nonce = oidc.randomNonce();
  const verifier = oidc.randomPKCECodeVerifier();
  const binding = randomBytes(32).toString("base64url");
  const now = ctx.clock.now();
  const minutes = ctx.config.sso.loginStateMinutes;
  const stateId = await inScope(ctx.db.app, { kind: "tenant", tenantId: provider.tenantId }, async (t) => {
    const [row] = await t.rows<{ id: string }>("SELECT gen_random_uuid() AS id");
    const id = row!.id;
    await t.exec(
      `INSERT INTO sso_login_states (id, state_hash, browser_hash, tenant_id, provider_id, purpose, sealed, started_by, created_at, expires_at, session_id)
       VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11)`,
      [
        id,
        sha256(state),
        sha256(binding),
        provider.tenantId,
        provider.id,
        opts.purpose,
        sealSsoValue(ctx.rootKey, "login-state", { nonce, verifier, ...(opts.returnTo ? { returnTo: opts.returnTo } : {}) } satisfies InFlight, id),
        opts.startedBy?.userId ?? null,
        now,
        new Date(now.getTime() + minutes * 60_000),
        opts.purpose === "step_up" ? (opts.sessionId ?? null) : null,
      ],
    );
    // Old records go as new ones come: nothing else needs them after expiry.
    await t.exec("DELETE FROM sso_login_states WHERE expires_at < $1", [new Date(now.getTime() - 86_400_000)]);
    return id;
  });
  const scopes = [...new Set(["openid", ...provider.config.scopes])].join(" ");
  const url = oidc.buildAuthorizationUrl(config, {
    redirect_uri: oidcRedirectUri(opts.base, provider.id),
    scope: scopes,
    state,
    nonce,
    code_challenge: await oidc.calculatePKCECodeChallenge(verifier),
    code_challenge_method: "S256",
    ...(opts.purpose === "test" ? { prompt: "login" } : {}),
    ...(opts.purpose === "step_up" ? { prompt: "login", max_age: "0" } : {}),
  });
  return { url: url.href, cookie: browserCookie(binding, minutes * 60), stateId };
}

async function auditUnreachable(ctx: ApplianceContext, provider: Oidc, err: unknown, meta: RequestMeta): Promise<void> {
  const why = err instanceof Error ? err.message.slice(0, 200) : "unknown error";
  await inScope(ctx.db.app, { kind: "tenant", tenantId: provider.tenantId }, (t) =>
    recordAuthEvent(
      ctx,
      t,
      { userId: null, role: null, tenantId: provider.tenantId },
      { action: "sso.discovery", resourceType: "identity_provider", resourceId: provider.id, outcome: "failure", reason: `discovery failed: ${why}` },
      meta,
    ),
  );
}

type StateRow = {
  id: string;
  tenant_id: string;
  provider_id: string;
  purpose: Purpose;
  session_id: string | null;
  created_at: Date;
  browser_hash: Buffer;
  sealed: Buffer;
  expires_at: Date;
  consumed_at: Date | null;
};

export type CallbackOutcome =
  { kind: "signed-in"; outcome: ExternalSignInOutcome } | { kind: "tested"; providerId: string; testId: string } | { kind: "stepped-up"; returnTo: string };

/**
 * The IdP sent the browser back. Every refusal is audited with its precise reason and answered
 * with the one generic error (refuseExternalSignIn); a test sign-in keeps what it received (or
 * why it failed) for the admin, and makes no session.
 */
export async function finishOidcSignIn(
  ctx: ApplianceContext,
  providerId: string,
  input: { currentUrl: URL; browserBinding: string | undefined; base: string; meta: RequestMeta },
): Promise<CallbackOutcome> {
  const { meta } = input;
  const provider = await asOidc(ctx, providerId);
  const who = { providerId: provider ? provider.id : null, tenantId: provider?.tenantId ?? null };
  const refuse = (reason: string) => refuseExternalSignIn(ctx, who, reason, meta);
  if (!provider) return refuse("callback for an unknown provider");

  const state = input.currentUrl.searchParams.get("state");
  if (!state) return refuse("no state in the authorization response");
  const now = ctx.clock.now();
  const row = await inScope(ctx.db.app, { kind: "appliance" }, async (t) => {
    const [r] = await t.rows<StateRow>(
      "SELECT id, tenant_id, provider_id, purpose, session_id, created_at, browser_hash, sealed, expires_at, consumed_at FROM sso_login_states WHERE state_hash = $1 FOR UPDATE",
      [sha256(state)],
    );
    if (r && !r.consumed_at) await t.exec("UPDATE sso_login_states SET consumed_at = $2 WHERE id = $1", [r.id, now]);
    return r;
  });
  if (!row) return refuse("wrong state: no sign-in was started with it");
  const refuseAs = (reason: string) => refuseExternalSignIn(ctx, who, reason, meta, row.purpose === "step_up" ? "auth.mfa.step_up" : "auth.login");
  if (row.consumed_at) return refuseAs("state already used (replayed authorization response)");
  if (row.provider_id !== provider.id) return refuseAs(`state belongs to another provider (${row.provider_id})`);
  if (row.expires_at <= now) return refuseAs("state expired");
  if (!input.browserBinding || !sha256(input.browserBinding).equals(row.browser_hash)) return refuseAs("the sign-in was started in another browser");
  if (row.purpose !== "test" && !provider.enabled) return refuseAs("identity provider is disabled");

  const test = { id: row.id, tenantId: row.tenant_id, providerId: row.provider_id };
  const failed = async (reason: string): Promise<never> => {
    if (row.purpose === "test") await saveTestResult(ctx, test, async () => failedTest(reason));
    return refuseAs(reason);
  };
  const idpError = input.currentUrl.searchParams.get("error");
  if (idpError) return failed(`the IdP answered error ${idpError.slice(0, 60)}`);

  const inFlight = openSsoValue<InFlight>(ctx.rootKey, "login-state", row.sealed, row.id);
  let identity: ExternalIdentity;
  let idToken: string | undefined;
  try {
    const config = await oidcConfiguration(ctx, provider);
    // The token request goes to the IdP with the redirect URI the authorization request used.
    const currentUrl = new URL(input.currentUrl.href);
    const tokens = await oidc.authorizationCodeGrant(config, currentUrl, {
      pkceCodeVerifier: inFlight.verifier,
      expectedState: state,
      expectedNonce: inFlight.nonce,
      idTokenExpected: true,
      // A step-up asked for max_age=0: auth_time must be present and recent (within the clock tolerance).
      ...(row.purpose === "step_up" ? { maxAge: 0 } : {}),
    });
    const claims = tokens.claims();
    if (!claims) return failed("no ID token in the token response");
    // An IdP that ignored prompt=login answers with its old sign-in: auth_time before the step-up began.
    if (row.purpose === "step_up" && (typeof claims.auth_time !== "number" || claims.auth_time * 1000 < row.created_at.getTime() - provider.config.clockToleranceSeconds * 1000)) {
      return failed("step-up: the IdP did not sign the person in again (auth_time is before the step-up began)");
    }
    let all: Record<string, unknown> = { ...claims };
    if (provider.config.fetchUserinfo && config.serverMetadata().userinfo_endpoint) {
      // userinfo's sub must equal the ID token's (OpenID Connect Core §5.3.4): passed as expected subject.
      const info = await oidc.fetchUserInfo(config, tokens.access_token, claims.sub);
      all = { ...info, ...claims };
    }
    identity = identityFrom(provider, all);
    idToken = tokens.id_token;
  } catch (err) {
    return failed(validationReason(err));
  }
  if (row.purpose === "test") {
    await saveTestResult(ctx, test, async (t) => ({ status: "received", error: null, identity: await testIdentityView(t, identity) }));
    return { kind: "tested", providerId: provider.id, testId: row.id };
  }
  if (row.purpose === "step_up") {
    await completeIdpStepUp(ctx, row.session_id!, identity, meta);
    return { kind: "stepped-up", returnTo: inFlight.returnTo ?? "/" };
  }
  const outcome = await completeExternalSignIn(ctx, identity, meta, {
    idpSession: { ...(idToken ? { idTokenHint: idToken } : {}), ...(typeof identity.claims.sid === "string" ? { sid: identity.claims.sid } : {}) },
  });
  return { kind: "signed-in", outcome };
}

/**
 * The failed check, precisely, for the audit trail: openid-client's code and the message of the
 * underlying oauth4webapi error ('unexpected ID Token "nonce" claim value', '"exp" claim timestamp
 * check failed'), which name the check and never carry a token or claim value.
 */
function validationReason(err: unknown): string {
  if (!(err instanceof Error)) return "token validation failed";
  const code = (err as { code?: unknown }).code;
  const cause = err.cause instanceof Error ? err.cause.message : null;
  return `${typeof code === "string" ? `${code}: ` : ""}${cause ?? err.message}`.slice(0, 300);
}

const str = (v: unknown): string | undefined => (typeof v === "string" && v.length > 0 ? v : undefined);

function identityFrom(provider: Oidc, claims: Record<string, unknown>): ExternalIdentity {
  const names = provider.config.claims;
  const rawGroups = claims[names.groups];
  const groups = Array.isArray(rawGroups) ? rawGroups.filter((g): g is string => typeof g === "string") : typeof rawGroups === "string" ? [rawGroups] : [];
  const amr = Array.isArray(claims.amr) ? claims.amr.filter((a): a is string => typeof a === "string") : undefined;
  const sub = String(claims.sub);
  const email = str(claims[names.email]);
  const displayName = str(claims[names.displayName]);
  const acr = str(claims.acr);
  return {
    providerId: provider.id,
    tenantId: provider.tenantId,
    subject: sub,
    username: str(claims[names.username]) ?? email ?? sub,
    ...(email ? { email } : {}),
    ...(displayName ? { displayName } : {}),
    groups,
    claims,
    authnContext: { ...(amr ? { amr } : {}), ...(acr ? { acr } : {}) },
  };
}

/**
 * Where to send the browser after signing out, so the IdP ends its session too (RP-initiated
 * logout 1.0), when the provider offers it; null otherwise.
 */
export async function oidcEndSessionUrl(ctx: ApplianceContext, providerId: string, hint: { idTokenHint?: string } | null, base: string): Promise<string | null> {
  const provider = await asOidc(ctx, providerId);
  if (!provider || !provider.config.rpInitiatedLogout) return null;
  try {
    const config = await oidcConfiguration(ctx, provider);
    if (!config.serverMetadata().end_session_endpoint) return null;
    return oidc.buildEndSessionUrl(config, {
      post_logout_redirect_uri: `${base}/`,
      ...(hint?.idTokenHint ? { id_token_hint: hint.idTokenHint } : {}),
    }).href;
  } catch {
    return null; // the appliance's own sign-out has happened; the IdP's is best effort
  }
}
