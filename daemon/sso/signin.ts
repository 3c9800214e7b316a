import { issueSession, stageFor, type IssuedSession } from "../auth/index.js";
import type { ApplianceContext } from "../context.js";
import { inScope, type Tx } from "../db/sql.js";
import { recordAuthEvent } from "../audit/append.js";
import type { Role } from "../kernel/actor.js";
import type { RequestMeta } from "../kernel/request-meta.js";
import { ExternalSignInRefused, type ExternalIdentity } from "./identity.js";
import { loadProviderIn, type LoadedProvider } from "./providers.js";
import { firstMatch, mfaModeFor, rulesIn } from "./rules.js";

/** The outcome local sign-in produces (daemon/auth/login.ts), for a sign-in through an IdP. */
export type ExternalSignInOutcome = {
  session: IssuedSession;
  userId: string;
  role: Role;
  mfaRequired: boolean;
  mfaEnrollmentRequired: boolean;
  /** True when the IdP's amr/acr counted as the second factor. */
  mfaFromIdp: boolean;
};

/** What the protocol wants remembered with the session, for signing out at the IdP later. */
export type IdpSessionHint = { idTokenHint?: string; sid?: string; nameId?: string; nameIdFormat?: string; sessionIndex?: string };

/** RFC 8176 methods that are a second factor, or that prove two by themselves. */
const SECOND_FACTORS = new Set(["otp", "hwk", "sc", "swk", "fpt", "face", "iris", "retina", "vbm", "pin", "sms", "tel"]);

/** Whether the IdP says it checked a second factor: amr `mfa`, a knowledge factor plus another, or an acr this provider keeps for MFA. */
export function idpAssertsMfa(provider: Pick<LoadedProvider, "mfaAcrValues">, authn: ExternalIdentity["authnContext"]): boolean {
  const amr = authn.amr ?? [];
  if (amr.includes("mfa")) return true;
  if (amr.includes("pwd") && amr.some((m) => SECOND_FACTORS.has(m))) return true;
  return authn.acr !== undefined && provider.mfaAcrValues.includes(authn.acr);
}

type Refusal = { refused: string; userId?: string | null };

const hasEmail = (identity: ExternalIdentity) => typeof identity.email === "string" && /^[^@\s]+@[^@\s]+$/.test(identity.email);

/**
 * Rules → account (linked, linked by email, or created just in time) → MFA policy → session, in
 * one transaction with its audit events. A refusal (no rule matched, account disabled, provider
 * disabled…) is audited with its precise reason in a transaction of its own, then the browser gets
 * the one generic error (ExternalSignInRefused).
 */
export async function completeExternalSignIn(
  ctx: ApplianceContext,
  identity: ExternalIdentity,
  meta: RequestMeta,
  opts: { idpSession?: IdpSessionHint } = {},
): Promise<ExternalSignInOutcome> {
  const result = await signInTransaction(ctx, identity, meta, opts).catch((err: unknown) => {
    if (err instanceof JitRefusal) return { refused: err.message, userId: null } as Refusal;
    throw err;
  });
  if ("refused" in result) return refuseExternalSignIn(ctx, { providerId: identity.providerId, tenantId: identity.tenantId, userId: result.userId ?? null }, result.refused, meta);
  return result;
}

function signInTransaction(ctx: ApplianceContext, identity: ExternalIdentity, meta: RequestMeta, opts: { idpSession?: IdpSessionHint }): Promise<ExternalSignInOutcome | Refusal> {
  return inScope(ctx.db.app, { kind: "tenant", tenantId: identity.tenantId }, async (t): Promise<ExternalSignInOutcome | Refusal> => {
    const provider = await loadProviderIn(ctx, t, identity.providerId);
    if (!provider || provider.tenantId !== identity.tenantId) return { refused: "unknown identity provider for this tenant" };
    if (!provider.enabled) return { refused: "identity provider is disabled" };
    const [tenant] = await t.rows<{ status: string; mfa_required: boolean; mfa_roles: string[] }>("SELECT status, mfa_required, mfa_roles FROM tenants WHERE id = $1", [
      identity.tenantId,
    ]);
    if (!tenant || tenant.status !== "active") return { refused: "tenant is not active" };

    const rule = firstMatch(await rulesIn(t), identity);
    const account = await accountFor(ctx, t, provider, identity);
    if ("refused" in account) return account;
    if (!rule) return { refused: `no rule matched (${identity.groups.length} groups received)`, userId: account.user?.id ?? null };
    const role = rule.role as Role;

    const now = ctx.clock.now();
    let user = account.user;
    if (!user) {
      user = await createJitUser(ctx, t, provider, identity, role, meta);
    } else {
      if (user.status !== "active") return { refused: "account is disabled", userId: user.id };
      if (user.role !== role) {
        await t.exec("UPDATE users SET role = $2, updated_at = $3 WHERE id = $1", [user.id, role, now]);
        await recordAuthEvent(
          ctx,
          t,
          { userId: user.id, role, tenantId: identity.tenantId },
          {
            action: "user.role.change",
            resourceType: "user",
            resourceId: user.id,
            outcome: "success",
            reason: `sign-in rule at position ${rule.position}: ${user.role} -> ${role}`,
          },
          meta,
        );
      }
      if (identity.displayName && identity.displayName !== user.display_name) {
        await t.exec("UPDATE users SET display_name = $2 WHERE id = $1", [user.id, identity.displayName.slice(0, 200)]);
      }
    }
    await t.exec(
      `INSERT INTO sso_links (provider_id, subject, tenant_id, user_id, username, last_groups, last_claims, created_at, last_login_at)
       VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $8)
       ON CONFLICT (provider_id, subject) DO UPDATE SET username = EXCLUDED.username, last_groups = EXCLUDED.last_groups,
         last_claims = EXCLUDED.last_claims, last_login_at = EXCLUDED.last_login_at`,
      [provider.id, identity.subject, identity.tenantId, user.id, identity.username.slice(0, 256), identity.groups, JSON.stringify(identity.claims), now],
    );

    // MFA: the IdP's word counts where the tenant's policy for this role says so; otherwise, and
    // when the IdP did not assert a second factor, the local TOTP rules apply as for a password sign-in.
    const mode = await mfaModeFor(t, role);
    const fromIdp = mode === "idp" && idpAssertsMfa(provider, identity.authnContext);
    const stage = fromIdp
      ? "active"
      : mode === "local"
        ? user.mfa_enrolled
          ? "mfa_required"
          : "mfa_enrollment_required"
        : stageFor(ctx, { role, mfa_enrolled: user.mfa_enrolled, tenant_mfa_required: tenant.mfa_required, tenant_mfa_roles: tenant.mfa_roles });
    if (stage === "active") await t.exec("UPDATE users SET last_login_at = $2 WHERE id = $1", [user.id, now]);
    const session = await issueSession(ctx, t, { userId: user.id, tenantId: identity.tenantId, stage, mfaVerifiedAt: fromIdp ? now : null }, meta);
    await t.exec("UPDATE sessions SET idp_provider_id = $2, idp_session = $3 WHERE id = $1", [session.id, provider.id, opts.idpSession ? JSON.stringify(opts.idpSession) : null]);
    await recordAuthEvent(
      ctx,
      t,
      { userId: user.id, role, tenantId: identity.tenantId },
      {
        action: "auth.login",
        resourceType: "session",
        resourceId: session.id,
        outcome: "success",
        reason: `via ${provider.kind} provider ${provider.id}${fromIdp ? ", MFA at the IdP" : ""}${stage === "active" ? "" : `, ${stage}`}`,
      },
      meta,
    );
    return {
      session,
      userId: user.id,
      role,
      mfaRequired: stage === "mfa_required",
      mfaEnrollmentRequired: stage === "mfa_enrollment_required",
      mfaFromIdp: fromIdp,
    };
  });
}

type AccountRow = { id: string; role: Role; status: string; display_name: string | null; mfa_enrolled: boolean };

async function accountFor(ctx: ApplianceContext, t: Tx, provider: LoadedProvider, identity: ExternalIdentity): Promise<{ user: AccountRow | null } | Refusal> {
  const cols = "u.id, u.role, u.status, u.display_name, (u.mfa_secret IS NOT NULL) AS mfa_enrolled";
  const [linked] = await t.rows<AccountRow>(`SELECT ${cols} FROM sso_links l JOIN users u ON u.id = l.user_id WHERE l.provider_id = $1 AND l.subject = $2`, [
    provider.id,
    identity.subject,
  ]);
  if (linked) return { user: linked };
  if (!hasEmail(identity)) return { user: null };
  const email = identity.email!.toLowerCase();
  // Emails are unique across the appliance; look beyond the tenant (appliance scope is not needed:
  // a clash with another tenant's account shows as a unique violation we turn into a refusal).
  const [byEmail] = await t.rows<AccountRow & { kind: string }>(`SELECT ${cols}, u.kind FROM users u WHERE u.email = $1`, [email]);
  if (!byEmail) return { user: null };
  if (provider.linkByEmail && byEmail.kind === "human") return { user: byEmail };
  return { refused: "the email belongs to an existing account that is not linked to this provider", userId: byEmail.id };
}

async function createJitUser(ctx: ApplianceContext, t: Tx, provider: LoadedProvider, identity: ExternalIdentity, role: Role, meta: RequestMeta): Promise<AccountRow> {
  if (!hasEmail(identity)) throw new JitRefusal("the IdP sent no email address, which a new account needs");
  const now = ctx.clock.now();
  // No usable password: '!' is no argon2 hash, so local sign-in can never succeed for this account.
  // source 'idp': access reviews and the users list tell accounts the IdP made from local and SCIM ones.
  const [row] = await t.rows<{ id: string }>(
    `INSERT INTO users (tenant_id, email, password_hash, role, status, display_name, source, created_at, updated_at)
     VALUES ($1, $2, '!sso', $3, 'active', $4, 'idp', $5, $5)
     ON CONFLICT (email) DO NOTHING RETURNING id`,
    [identity.tenantId, identity.email!.toLowerCase(), role, identity.displayName?.slice(0, 200) || null, now],
  );
  if (!row) throw new JitRefusal("the email belongs to an account of another tenant");
  await recordAuthEvent(
    ctx,
    t,
    { userId: row.id, role, tenantId: identity.tenantId },
    { action: "user.create", resourceType: "user", resourceId: row.id, outcome: "success", reason: `just-in-time through ${provider.kind} provider ${provider.id}` },
    meta,
  );
  return { id: row.id, role, status: "active", display_name: identity.displayName ?? null, mfa_enrolled: false };
}

/** A just-in-time account cannot be made; thrown inside the transaction (which rolls back), audited after it. */
class JitRefusal extends Error {}

/**
 * Audits the precise reason a sign-in through an IdP was refused (in its own transaction, so it
 * stays when the sign-in's work is rolled back) and throws the generic browser error. The
 * reason names checks and ids, never a token or claim value.
 */
export async function refuseExternalSignIn(
  ctx: ApplianceContext,
  who: { providerId: string | null; tenantId: string | null; userId?: string | null },
  reason: string,
  meta: RequestMeta,
  action: "auth.login" | "auth.mfa.step_up" = "auth.login",
): Promise<never> {
  const scope = who.tenantId ? ({ kind: "tenant", tenantId: who.tenantId } as const) : ({ kind: "appliance" } as const);
  await inScope(ctx.db.app, scope, (t) =>
    recordAuthEvent(
      ctx,
      t,
      { userId: who.userId ?? null, role: null, tenantId: who.tenantId },
      { action, resourceType: "identity_provider", resourceId: who.providerId, outcome: "failure", reason: `sso: ${reason}`.slice(0, 480) },
      meta,
    ),
  );
  throw new ExternalSignInRefused(meta.requestId ?? null, action === "auth.mfa.step_up");
}

/** The session a step-up at the IdP is for, as the start of the step-up checks it. */
export type StepUpSession = { id: string; userId: string; tenantId: string; providerId: string; providerKind: string };

/**
 * Whether a session may step up by signing in again at its IdP: it was made through an enabled
 * provider of a kind that can force a fresh sign-in, and its role's MFA policy accepts the IdP's
 * word (`idp`; under `local` the authenticator code is the only step-up). The session when it may.
 */
export async function idpStepUpRefusal(ctx: ApplianceContext, sessionId: string, tenantId: string): Promise<{ refusal: string } | StepUpSession> {
  return inScope(ctx.db.app, { kind: "tenant", tenantId }, async (t) => {
    const [s] = await t.rows<{ user_id: string; role: Role; idp_provider_id: string | null; kind: string | null; enabled: boolean | null }>(
      `SELECT s.user_id, u.role, s.idp_provider_id, p.kind, p.enabled FROM sessions s JOIN users u ON u.id = s.user_id
         LEFT JOIN identity_providers p ON p.id = s.idp_provider_id WHERE s.id = $1`,
      [sessionId],
    );
    if (!s?.idp_provider_id || !s.kind) return { refusal: "this session was not made through an identity provider: confirm with your authenticator code" };
    if (!s.enabled) return { refusal: "the identity provider this session was made through is disabled: confirm with your authenticator code" };
    // OIDC (prompt=login, max_age=0) and SAML (ForceAuthn) can ask for a fresh sign-in; LDAP has no sign-in of its own to repeat.
    if (s.kind !== "oidc" && s.kind !== "saml") return { refusal: "this identity provider cannot ask you to sign in again: confirm with your authenticator code" };
    if ((await mfaModeFor(t, s.role)) === "local") return { refusal: "your role's policy asks for your authenticator code, not the identity provider's" };
    return { id: sessionId, userId: s.user_id, tenantId, providerId: s.idp_provider_id, providerKind: s.kind };
  });
}

/**
 * The IdP signed the person in again for a step-up (OIDC `prompt=login` + `max_age=0`, SAML
 * `ForceAuthn`); the protocol module has checked that it really did (auth_time / AuthnInstant after
 * the step-up began). Refreshes the session's second-factor time when it is the same person, the
 * session is still open, and the IdP asserts a second factor. Refusals are audited as
 * `auth.mfa.step_up` failures and answered with the one generic error.
 */
export async function completeIdpStepUp(ctx: ApplianceContext, sessionId: string, identity: ExternalIdentity, meta: RequestMeta): Promise<void> {
  const who = { providerId: identity.providerId, tenantId: identity.tenantId };
  const refusal = await inScope(ctx.db.app, { kind: "tenant", tenantId: identity.tenantId }, async (t): Promise<Refusal | null> => {
    const provider = await loadProviderIn(ctx, t, identity.providerId);
    if (!provider?.enabled) return { refused: "identity provider is disabled" };
    const now = ctx.clock.now();
    const [s] = await t.rows<{ user_id: string; role: Role; stage: string; revoked_at: Date | null; expires_at: Date; idp_provider_id: string | null }>(
      "SELECT s.user_id, u.role, s.stage, s.revoked_at, s.expires_at, s.idp_provider_id FROM sessions s JOIN users u ON u.id = s.user_id WHERE s.id = $1 FOR UPDATE OF s",
      [sessionId],
    );
    if (!s || s.revoked_at || s.expires_at <= now || s.stage !== "active") return { refused: "step-up: the session it was for has ended" };
    if (s.idp_provider_id !== provider.id) return { refused: "step-up: the session was made through another provider", userId: s.user_id };
    const [link] = await t.rows<{ user_id: string }>("SELECT user_id FROM sso_links WHERE provider_id = $1 AND subject = $2", [provider.id, identity.subject]);
    if (link?.user_id !== s.user_id) return { refused: "step-up: another person signed in at the IdP (the subject is not the session's account)", userId: s.user_id };
    if ((await mfaModeFor(t, s.role)) === "local") return { refused: "step-up: the role's policy asks for local TOTP", userId: s.user_id };
    if (!idpAssertsMfa(provider, identity.authnContext)) return { refused: "step-up: the IdP did not assert a second factor (amr/acr)", userId: s.user_id };
    await t.exec("UPDATE sessions SET mfa_verified_at = $2, last_seen_at = $2 WHERE id = $1", [sessionId, now]);
    await recordAuthEvent(
      ctx,
      t,
      { userId: s.user_id, role: s.role, tenantId: identity.tenantId },
      { action: "auth.mfa.step_up", resourceType: "session", resourceId: sessionId, outcome: "success", reason: `at the IdP: ${provider.kind} provider ${provider.id}` },
      meta,
    );
    return null;
  });
  if (refusal) return refuseExternalSignIn(ctx, { ...who, userId: refusal.userId ?? null }, refusal.refused, meta, "auth.mfa.step_up");
}
