import * as jose from "jose";
import type { ApplianceContext } from "../../context.js";
import { inScope } from "../../db/sql.js";
import type { RequestMeta } from "../../kernel/request-meta.js";
import { acceptLogoutMessageOnce, auditRefusedIdpLogout, endIdpSessions } from "../idp-logout.js";
import { loadProvider, type LoadedProvider } from "../providers.js";
import { idTokenAlg, oidcConfiguration } from "./client.js";
import type { OidcConfig, OidcSecrets } from "./settings.js";

/**
 * OpenID Connect Back-Channel Logout 1.0: the IdP posts a signed logout token to
 * `…/sso/oidc/{id}/backchannel-logout` when a person's IdP session ends (sign-out there, an
 * administrator ending it, a leaver disabled), and every appliance session made through that IdP
 * session (`sid`) or for that person (`sub`) ends. Sessions are read from PostgreSQL on every
 * request, so they end on every replica at once. The token is validated as §2.6 asks: signature
 * with the IdP's keys and the ID token's algorithm, `iss`, `aud`, `iat` (and `exp` when present)
 * within the clock tolerance, the back-channel logout event in `events`, `sub` or `sid`, no
 * `nonce` (so an ID token cannot pass for a logout token), `typ` logout+jwt when given, and a
 * `jti` seen once per provider (replay, on every replica).
 */
const EVENT = "http://schemas.openid.net/event/backchannel-logout";
/** How long an accepted jti is remembered when the token has no exp: longer than any sensible iat tolerance. */
const JTI_MEMORY_MS = 10 * 60_000;

type Oidc = LoadedProvider<OidcConfig, OidcSecrets>;
type KeySet = { uri: string; keys: ReturnType<typeof jose.createRemoteJWKSet> };
const keySets = new Map<string, KeySet>();

export type BackchannelOutcome = { ok: true; sessionsEnded: number } | { ok: false; reason: string };

function keysOf(ctx: ApplianceContext, providerId: string, jwksUri: string): KeySet["keys"] {
  const known = keySets.get(providerId);
  if (known?.uri === jwksUri) return known.keys;
  // jose refetches on an unknown kid (key rollover) at most every cooldownDuration.
  const keys = jose.createRemoteJWKSet(new URL(jwksUri), {
    timeoutDuration: ctx.config.sso.requestTimeoutSeconds * 1000,
    cacheMaxAge: ctx.config.sso.discoveryCacheMinutes * 60_000,
  });
  keySets.set(providerId, { uri: jwksUri, keys });
  return keys;
}

async function validate(ctx: ApplianceContext, provider: Oidc, token: string): Promise<{ ok: true; claims: jose.JWTPayload } | { ok: false; reason: string }> {
  let header: jose.ProtectedHeaderParameters;
  try {
    header = jose.decodeProtectedHeader(token);
  } catch {
    return { ok: false, reason: "the logout token is not a JWT" };
  }
  if (header.typ !== undefined && header.typ.toLowerCase() !== "logout+jwt" && header.typ.toLowerCase() !== "application/logout+jwt")
    return { ok: false, reason: `unexpected typ ${String(header.typ).slice(0, 40)}` };
  const config = await oidcConfiguration(ctx, provider);
  const server = config.serverMetadata();
  if (!server.jwks_uri) return { ok: false, reason: "the IdP publishes no jwks_uri" };
  const alg = idTokenAlg(provider.config, server.id_token_signing_alg_values_supported);
  let claims: jose.JWTPayload;
  try {
    ({ payload: claims } = await jose.jwtVerify(token, keysOf(ctx, provider.id, server.jwks_uri), {
      algorithms: [alg],
      issuer: server.issuer,
      audience: provider.config.clientId,
      clockTolerance: provider.config.clockToleranceSeconds,
      currentDate: ctx.clock.now(),
      // iat is required (and must not be in the future); exp, when present, is checked by jwtVerify.
      requiredClaims: ["iat", "jti"],
      maxTokenAge: `${provider.config.clockToleranceSeconds + 300}s`,
    }));
  } catch (err) {
    const code = (err as { code?: unknown }).code;
    return { ok: false, reason: `${typeof code === "string" ? `${code}: ` : ""}${err instanceof Error ? err.message : "not valid"}`.slice(0, 300) };
  }
  const events = claims.events;
  if (!events || typeof events !== "object" || Array.isArray(events) || !(EVENT in events)) return { ok: false, reason: "no back-channel logout event in events" };
  if (typeof (events as Record<string, unknown>)[EVENT] !== "object") return { ok: false, reason: "the back-channel logout event is not a JSON object" };
  if ("nonce" in claims) return { ok: false, reason: "a logout token must not carry a nonce (an ID token?)" };
  const sub = typeof claims.sub === "string" && claims.sub ? claims.sub : null;
  const sid = typeof claims.sid === "string" && claims.sid ? claims.sid : null;
  if (!sub && !sid) return { ok: false, reason: "neither sub nor sid in the logout token" };
  if (typeof claims.jti !== "string" || claims.jti.length === 0 || claims.jti.length > 200) return { ok: false, reason: "no usable jti in the logout token" };
  return { ok: true, claims };
}

/**
 * Validates a logout token and ends the sessions it names. A refusal is audited (`auth.logout`,
 * failure, `sso: back-channel logout: …`) and answered 400 by the route; the token itself is never logged.
 */
export async function acceptBackchannelLogout(ctx: ApplianceContext, providerId: string, token: string | null, meta: RequestMeta): Promise<BackchannelOutcome> {
  const p = await loadProvider(ctx, providerId);
  const provider = p && p.kind === "oidc" ? (p as unknown as Oidc) : null;
  const refuse = async (reason: string): Promise<BackchannelOutcome> => {
    await auditRefusedIdpLogout(ctx, provider, `back-channel logout: ${reason}`, meta);
    return { ok: false, reason };
  };
  if (!provider) return refuse("no such OpenID Connect provider");
  if (!token) return refuse("no logout_token in the request");
  const checked = await validate(ctx, provider, token).catch((err: unknown) => ({
    ok: false as const,
    reason: `the IdP's keys could not be read: ${err instanceof Error ? err.message.slice(0, 200) : "error"}`,
  }));
  if (!checked.ok) return refuse(checked.reason);
  const { claims } = checked;
  const sub = typeof claims.sub === "string" && claims.sub ? claims.sub : null;
  const sid = typeof claims.sid === "string" && claims.sid ? claims.sid : null;
  const now = ctx.clock.now();
  const result = await inScope(ctx.db.app, { kind: "tenant", tenantId: provider.tenantId }, async (t) => {
    const keepUntil = new Date(Math.max((claims.exp ?? 0) * 1000, now.getTime() + JTI_MEMORY_MS));
    if (!(await acceptLogoutMessageOnce(ctx, t, provider, claims.jti!, keepUntil))) return null;
    // sid names one IdP session; sub alone names every session of the person made through this IdP.
    return endIdpSessions(
      ctx,
      t,
      provider,
      {
        sql: "($4::text IS NULL OR s.idp_session ->> 'sid' = $4) AND ($5::text IS NULL OR s.user_id = (SELECT l.user_id FROM sso_links l WHERE l.provider_id = $1 AND l.subject = $5))",
        params: [sid, sub],
      },
      "signed out at the identity provider (back-channel logout)",
      (n) => `back-channel logout from oidc provider ${provider.id}: ${n} session(s) ended (${sid ? "sid" : ""}${sid && sub ? "+" : ""}${sub ? "sub" : ""})`,
      meta,
    );
  });
  if (result === null) return refuse("replayed logout token (jti already used)");
  return { ok: true, sessionsEnded: result };
}
