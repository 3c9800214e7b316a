import type { Response } from "express";
import { currentActor, type Actor } from "../kernel/actor.js";
import { defineRoute } from "../kernel/define-route.js";
import { Forbidden, TooManyRequests, Unauthorized } from "../kernel/errors.js";
import { changePassword, listSessions, revokeAllSessions, revokeSession } from "./account.js";
import { createApiToken, listApiTokens, revokeApiToken } from "./api-tokens.js";
import { acceptInvite, createInvite, listInvites, revokeInvite } from "./invites.js";
import { signIn, signOut } from "./login.js";
import { activateMfa, regenerateRecoveryCodes, startMfaEnrollment, subjectOfSession, verifySecondFactor, type MfaAttempt } from "./mfa.js";
import {
  acceptedInvite,
  acceptInviteRequest,
  activateRequest,
  apiTokenList,
  apiTokenView,
  changePasswordRequest,
  codeRequest,
  createApiTokenRequest,
  createdApiToken,
  createdInvite,
  createInviteRequest,
  idParams,
  inviteList,
  inviteView,
  loginRequest,
  loginResponse,
  mfaActivated,
  mfaEnrollment,
  mfaVerified,
  recoveryCodes,
  revokeAllRequest,
  revokedCount,
  sessionInfo,
  sessionList,
  sessionsQuery,
} from "./schema.js";
import { idleMinutesFor, type ResolvedSession } from "./sessions.js";
import { clearedSessionCookie, csrfTokenFor, readCookie, sessionCookie } from "./tokens.js";
import { DEVICE_COOKIE, deviceCookie } from "./known-devices.js";

/** The session a request presents, whether it finished its second factor or not. */
function presentedSession(res: Response): ResolvedSession {
  const session = (res.locals.session ?? res.locals.pendingSession) as ResolvedSession | undefined;
  if (!session) currentActor(res); // throws the right 401 (ended, or never signed in)
  if (!session) throw new Unauthorized("sign in first");
  return session;
}

function failedMfa(res: Response, attempt: Extract<MfaAttempt, { ok: false }>): never {
  if (attempt.locked) {
    res.setHeader("Retry-After", String(attempt.retryAfterSeconds));
    throw new TooManyRequests("too many wrong codes; wait and try again", { retryAfterSeconds: attempt.retryAfterSeconds });
  }
  throw new Unauthorized("the code is not correct, or was already used", { reason: "invalid_code" });
}

const tag = "identity";

/** Sign-in, the presented session, MFA, own account, sessions, invites and API tokens. */
export const authRoutes = [
  // ---- public ------------------------------------------------------------------------------
  defineRoute(
    {
      method: "post",
      path: "/auth/login",
      action: "public",
      tag,
      summary: "Sign in with email and password; sets the session cookie",
      body: loginRequest,
      response: loginResponse,
      problems: {
        401: "Email or password incorrect (the same answer whether or not the account exists)",
        403: "Local sign-in is for break-glass accounts only in this tenant: sign in through its identity provider",
        429: "Locked out or rate limited",
      },
    },
    async ({ ctx, req, body, res, meta }) => {
      const outcome = await signIn(ctx, body, meta, { cookie: readCookie(req.headers.cookie, DEVICE_COOKIE) });
      if (!outcome.ok) {
        if (outcome.reason === "invalid") throw new Unauthorized("the email or password is incorrect", { reason: "invalid_credentials" });
        if (outcome.reason === "local_sign_in_off") {
          throw new Forbidden("local sign-in is turned off for your organisation; sign in through its identity provider", { reason: "local_sign_in_off" });
        }
        res.setHeader("Retry-After", String(outcome.retryAfterSeconds));
        throw new TooManyRequests("too many sign-in attempts; wait and try again", { retryAfterSeconds: outcome.retryAfterSeconds });
      }
      res.append("Set-Cookie", sessionCookie(outcome.session.token));
      res.append("Set-Cookie", deviceCookie(ctx, outcome.deviceToken));
      return {
        mfaRequired: outcome.mfaRequired,
        mfaEnrollmentRequired: outcome.mfaEnrollmentRequired,
        csrfToken: outcome.session.csrfToken,
        expiresAt: outcome.session.expiresAt,
      };
    },
  ),
  defineRoute(
    {
      method: "post",
      path: "/invites/accept",
      action: "public",
      tag,
      summary: "Accept an invite: set the password; starts the first session (MFA enrollment first where enforced)",
      body: acceptInviteRequest,
      response: acceptedInvite,
      status: 201,
      problems: { 409: "Already used", 410: "Expired or withdrawn", 429: "Rate limited" },
    },
    async ({ ctx, body, res, meta }) => {
      const accepted = await acceptInvite(ctx, body, meta);
      res.append("Set-Cookie", sessionCookie(accepted.session.token));
      return {
        userId: accepted.userId,
        role: accepted.role,
        tenantId: accepted.tenantId,
        mfaEnrollmentRequired: accepted.mfaEnrollmentRequired,
        csrfToken: accepted.session.csrfToken,
      };
    },
  ),

  // ---- the presented session, finished or waiting for its second factor -------------------
  defineRoute(
    {
      method: "get",
      path: "/auth/session",
      action: "authenticated",
      tag,
      summary: "The current session: user, stage, CSRF token, idle and absolute expiry (does not extend the session); also a session waiting for its second factor",
      response: sessionInfo,
    },
    ({ ctx, res }) => {
      const actor = res.locals.actor as Actor | undefined;
      if (actor?.via === "api-token") {
        return {
          via: "api-token" as const,
          stage: "active" as const,
          user: { id: actor.userId, email: null, role: actor.role, tenantId: actor.tenantId },
          scopes: actor.scopes,
          serverTime: ctx.clock.now(),
        };
      }
      const s = presentedSession(res);
      const token = res.locals.sessionToken as string;
      const idleMinutes = idleMinutesFor(ctx, s.idle_minutes);
      const support = actor?.supportAccess;
      return {
        via: "session" as const,
        stage: s.stage,
        user: { id: s.user_id, email: s.email, displayName: s.display_name, role: s.role, tenantId: s.tenant_id },
        csrfToken: csrfTokenFor(token),
        idleTimeoutMinutes: idleMinutes,
        idleExpiresAt: new Date(s.last_seen_at.getTime() + idleMinutes * 60_000),
        expiresAt: s.expires_at,
        mfaEnabled: s.mfa_enrolled,
        mfaVerifiedAt: s.mfa_verified_at ?? null,
        supportAccess: support ? { ...support } : null,
        serverTime: ctx.clock.now(),
      };
    },
  ),
  defineRoute({ method: "post", path: "/auth/logout", action: "session", tag, summary: "End the current session" }, async ({ ctx, res, meta }) => {
    const s = presentedSession(res);
    await signOut(ctx, { sessionId: s.id, userId: s.user_id, role: s.role, tenantId: s.tenant_id }, meta);
    res.append("Set-Cookie", clearedSessionCookie());
  }),
  defineRoute(
    {
      method: "post",
      path: "/auth/mfa",
      action: "session",
      tag,
      summary: "Second step of sign-in, or step-up on an active session: a TOTP or recovery code",
      body: codeRequest,
      response: mfaVerified,
      problems: { 401: "Wrong or reused code, or no session", 429: "Too many wrong codes" },
    },
    async ({ ctx, body, res, meta }) => {
      const s = presentedSession(res);
      if (s.stage === "mfa_enrollment_required") throw new Unauthorized("set up an authenticator first (POST /api/v1/auth/mfa/enroll)", { reason: s.stage });
      const attempt = await verifySecondFactor(ctx, subjectOfSession(s), body, meta);
      if (!attempt.ok) failedMfa(res, attempt);
      return { stage: "active" as const, mfaVerifiedAt: ctx.clock.now(), ...(attempt.recoveryCodesLeft !== undefined ? { recoveryCodesLeft: attempt.recoveryCodesLeft } : {}) };
    },
  ),
  defineRoute(
    {
      method: "post",
      path: "/auth/mfa/enroll",
      action: "session",
      tag,
      summary: "Start authenticator enrollment: secret, otpauth URI and QR code (PNG data URI)",
      response: mfaEnrollment,
      problems: { 409: "Already enrolled" },
    },
    ({ ctx, res, meta }) => {
      const s = presentedSession(res);
      if (s.stage === "mfa_required") throw new Unauthorized("enter the code from your authenticator app first", { reason: s.stage });
      return startMfaEnrollment(ctx, subjectOfSession(s), meta);
    },
  ),
  defineRoute(
    {
      method: "post",
      path: "/auth/mfa/activate",
      action: "session",
      tag,
      summary: "Finish enrollment with a code; returns recovery codes (shown once)",
      body: activateRequest,
      response: mfaActivated,
      problems: { 401: "Wrong code, or no session" },
    },
    async ({ ctx, body, res, meta }) => {
      const s = presentedSession(res);
      if (s.stage === "mfa_required") throw new Unauthorized("enter the code from your authenticator app first", { reason: s.stage });
      const attempt = await activateMfa(ctx, subjectOfSession(s), body.code, meta);
      if (!attempt.ok) failedMfa(res, attempt);
      return { recoveryCodes: attempt.recoveryCodes ?? [], csrfToken: csrfTokenFor(res.locals.sessionToken as string) };
    },
  ),

  // ---- own account --------------------------------------------------------------------------
  defineRoute(
    { method: "post", path: "/auth/mfa/recovery-codes", action: "account:manage", tag, summary: "Replace recovery codes (needs step-up)", response: recoveryCodes },
    async ({ ctx, actor, meta }) => ({ recoveryCodes: await regenerateRecoveryCodes(ctx, actor, meta) }),
  ),
  defineRoute(
    { method: "post", path: "/auth/password", action: "account:manage", tag, summary: "Change own password; ends every session of the account", body: changePasswordRequest },
    async ({ ctx, actor, body, res, meta }) => {
      await changePassword(ctx, actor, body, meta);
      res.append("Set-Cookie", clearedSessionCookie());
    },
  ),

  // ---- sessions -----------------------------------------------------------------------------
  defineRoute(
    {
      method: "get",
      path: "/sessions",
      action: "session:list",
      tag,
      summary: "Open sessions: own, another account's with ?userId=, or every live session of the tenant with ?all=true (admins)",
      query: sessionsQuery,
      response: sessionList,
    },
    ({ ctx, actor, query }) => listSessions(ctx, actor, { ...(query.userId ? { userId: query.userId } : {}), all: query.all === "true" }),
  ),
  defineRoute({ method: "delete", path: "/sessions/:id", action: "session:revoke", tag, summary: "Revoke one session", params: idParams }, async ({ ctx, actor, params, meta }) => {
    await revokeSession(ctx, actor, params.id, meta);
  }),
  defineRoute(
    {
      method: "post",
      path: "/sessions/revoke-all",
      action: "session:revoke",
      tag,
      summary: "Sign out everywhere: own sessions, another account's, or everyone of the tenant but the caller (admins; with a reason, audited)",
      body: revokeAllRequest,
      response: revokedCount,
    },
    ({ ctx, actor, body, meta }) =>
      revokeAllSessions(
        ctx,
        actor,
        {
          ...(body.userId ? { userId: body.userId } : {}),
          includeCurrent: body.includeCurrent === true,
          everyone: body.everyone === true,
          ...(body.reason ? { reason: body.reason } : {}),
        },
        meta,
      ),
  ),

  // ---- invites ------------------------------------------------------------------------------
  defineRoute(
    { method: "get", path: "/invites", action: "invite:list", tag, summary: "Invites of the tenant (or appliance-level ones for super-admins)", response: inviteList },
    ({ ctx, actor }) => listInvites(ctx, actor),
  ),
  defineRoute(
    {
      method: "post",
      path: "/invites",
      action: "invite:create",
      tag,
      summary: "Invite someone by email with a role; the response carries the link token (shown once)",
      body: createInviteRequest,
      response: createdInvite,
      status: 201,
      problems: { 409: "Account exists" },
    },
    ({ ctx, actor, body, meta }) => createInvite(ctx, actor, body, meta),
  ),
  defineRoute(
    { method: "delete", path: "/invites/:id", action: "invite:revoke", tag, summary: "Withdraw an invite", params: idParams, response: inviteView },
    ({ ctx, actor, params, meta }) => revokeInvite(ctx, actor, params.id, meta),
  ),

  // ---- API tokens ---------------------------------------------------------------------------
  defineRoute(
    { method: "get", path: "/api-tokens", action: "api_token:list", tag, summary: "API tokens of the tenant's service accounts", response: apiTokenList },
    ({ ctx, actor }) => listApiTokens(ctx, actor),
  ),
  defineRoute(
    {
      method: "post",
      path: "/api-tokens",
      action: "api_token:create",
      tag,
      summary: "Create a service account and its API token (shown once; needs step-up)",
      body: createApiTokenRequest,
      response: createdApiToken,
      status: 201,
    },
    ({ ctx, actor, body, meta }) => createApiToken(ctx, actor, body, meta),
  ),
  defineRoute(
    {
      method: "delete",
      path: "/api-tokens/:id",
      action: "api_token:revoke",
      tag,
      summary: "Revoke an API token (its service account is deactivated)",
      params: idParams,
      response: apiTokenView,
    },
    ({ ctx, actor, params, meta }) => revokeApiToken(ctx, actor, params.id, meta),
  ),
];
