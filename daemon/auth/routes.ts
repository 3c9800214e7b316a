import { Router, type Response } from "express";
import { z } from "zod";
import { currentActor, type Actor } from "../kernel/actor.js";
import { guardedRoute } from "../access/guard.js";
import type { ApplianceContext } from "../context.js";
import { TooManyRequests, Unauthorized } from "../kernel/errors.js";
import { jsonBody, jsonResponse, openApiRegistry, problemResponse } from "../http/openapi.js";
import { changePassword, changePasswordRequest, listSessions, revokeAllSessions, revokeSession } from "./account.js";
import { createApiToken, createApiTokenRequest, listApiTokens, revokeApiToken } from "./api-tokens.js";
import { requestMeta } from "../kernel/request-meta.js";
import { acceptInvite, acceptInviteRequest, createInvite, createInviteRequest, listInvites, revokeInvite } from "./invites.js";
import { signIn, signOut, loginRequest } from "./login.js";
import { activateMfa, regenerateRecoveryCodes, startMfaEnrollment, subjectOfSession, verifySecondFactor, type MfaAttempt, type SessionSubject } from "./mfa.js";
import { idleMinutesFor, type ResolvedSession } from "./sessions.js";
import { clearedSessionCookie, csrfTokenFor, sessionCookie } from "./tokens.js";

const API = "/api/v1";
const idParam = z.object({ id: z.uuid() }).strict();

const codeRequest = z
  .object({
    /** Six digits from the authenticator app. */
    code: z.string().regex(/^\d{6}$/, "six digits").optional(),
    /** One of the recovery codes shown at enrollment (single use). */
    recoveryCode: z.string().min(16).max(32).optional(),
  })
  .strict()
  .refine((b) => (b.code === undefined) !== (b.recoveryCode === undefined), { message: "send either code or recoveryCode" });
const activateRequest = z.object({ code: z.string().regex(/^\d{6}$/, "six digits") }).strict();
const revokeAllRequest = z
  .object({
    /** Another account (admins); omitted: your own. */
    userId: z.uuid().optional(),
    /** Also end the session making this request (own sessions only). */
    includeCurrent: z.boolean().optional(),
  })
  .strict();
const sessionsQuery = z.object({ userId: z.uuid().optional() }).strict();

const loginResponse = z.object({ mfaRequired: z.boolean(), mfaEnrollmentRequired: z.boolean(), csrfToken: z.string(), expiresAt: z.string() });
const sessionInfo = z.object({
  via: z.enum(["session", "api-token"]),
  stage: z.string(),
  user: z.object({ id: z.string(), email: z.string().nullable(), role: z.string(), tenantId: z.string().nullable() }),
  csrfToken: z.string().optional(),
  idleTimeoutMinutes: z.number().optional(),
  idleExpiresAt: z.string().optional(),
  expiresAt: z.string().optional(),
  mfaEnabled: z.boolean().optional(),
  mfaVerifiedAt: z.string().nullable().optional(),
  supportAccess: z.object({ requestId: z.string(), supportUserId: z.string(), approvedBy: z.string(), approvedByName: z.string(), expiresAt: z.string() }).nullable().optional(),
  /** The appliance's clock when it answered: the UI corrects its countdowns for a skewed workstation clock. */
  serverTime: z.string(),
});

function doc(method: "get" | "post" | "delete", path: string, summary: string, extra: { body?: z.ZodType; response?: z.ZodType; status?: number; problems?: Record<number, string> } = {}) {
  const status = extra.status ?? (extra.response ? 200 : 204);
  openApiRegistry.registerPath({
    method,
    path: `${API}${path}`.replace(/:(\w+)/g, "{$1}"),
    summary,
    tags: ["identity"],
    ...(extra.body ? { request: { body: jsonBody(extra.body) } } : {}),
    responses: {
      [status]: extra.response ? jsonResponse(summary, extra.response) : { description: "Done" },
      ...Object.fromEntries(Object.entries(extra.problems ?? {}).map(([code, text]) => [code, problemResponse(text)])),
    },
  });
}

doc("post", "/auth/login", "Sign in with email and password; sets the session cookie", {
  body: loginRequest,
  response: loginResponse,
  problems: { 401: "Email or password incorrect (the same answer whether or not the account exists)", 429: "Locked out or rate limited" },
});
doc("get", "/auth/session", "The current session: user, stage, CSRF token, idle and absolute expiry (does not extend the session)", { response: sessionInfo, problems: { 401: "No session" } });
doc("post", "/auth/logout", "End the current session");
doc("post", "/auth/mfa", "Second step of sign-in, or step-up on an active session: a TOTP or recovery code", {
  body: codeRequest,
  response: z.object({ stage: z.string(), mfaVerifiedAt: z.string(), recoveryCodesLeft: z.number().optional() }),
  problems: { 401: "Wrong or reused code", 429: "Too many wrong codes" },
});
doc("post", "/auth/mfa/enroll", "Start authenticator enrollment: secret, otpauth URI and QR code (PNG data URI)", {
  response: z.object({ secret: z.string(), otpauthUrl: z.string(), qrCodeDataUrl: z.string() }),
  problems: { 409: "Already enrolled" },
});
doc("post", "/auth/mfa/activate", "Finish enrollment with a code; returns recovery codes (shown once)", {
  body: activateRequest,
  response: z.object({ recoveryCodes: z.array(z.string()), csrfToken: z.string() }),
  problems: { 401: "Wrong code" },
});
doc("post", "/auth/mfa/recovery-codes", "Replace recovery codes (needs step-up)", { response: z.object({ recoveryCodes: z.array(z.string()) }), problems: { 403: "Step-up required" } });
doc("post", "/auth/password", "Change own password; ends every session of the account", { body: changePasswordRequest, problems: { 400: "Wrong current password or unacceptable new one" } });
doc("post", "/invites/accept", "Accept an invite: set the password; starts the first session (MFA enrollment first where enforced)", {
  body: acceptInviteRequest,
  status: 201,
  response: z.object({ userId: z.string(), role: z.string(), tenantId: z.string().nullable(), mfaEnrollmentRequired: z.boolean(), csrfToken: z.string() }),
  problems: { 400: "Invalid or tampered token", 409: "Already used", 410: "Expired or withdrawn", 429: "Rate limited" },
});
doc("get", "/invites", "Invites of the tenant (or appliance-level ones for super-admins)", { response: z.array(z.object({}).passthrough()) });
doc("post", "/invites", "Invite someone by email with a role; the response carries the link token (shown once)", {
  body: createInviteRequest,
  status: 201,
  response: z.object({ invite: z.object({}).passthrough(), token: z.string() }),
  problems: { 403: "Role not grantable by you", 409: "Account exists" },
});
doc("delete", "/invites/:id", "Withdraw an invite", { response: z.object({}).passthrough() });
doc("get", "/sessions", "Open sessions: own, or another account's with ?userId= (admins)", { response: z.array(z.object({}).passthrough()) });
doc("delete", "/sessions/:id", "Revoke one session");
doc("post", "/sessions/revoke-all", "Sign out everywhere: own sessions or another account's (admins)", { body: revokeAllRequest, response: z.object({ revoked: z.number() }) });
doc("get", "/api-tokens", "API tokens of the tenant's service accounts", { response: z.array(z.object({}).passthrough()) });
doc("post", "/api-tokens", "Create a service account and its API token (shown once; needs step-up)", {
  body: createApiTokenRequest,
  status: 201,
  response: z.object({ token: z.string(), apiToken: z.object({}).passthrough() }),
});
doc("delete", "/api-tokens/:id", "Revoke an API token (its service account is deactivated)", { response: z.object({}).passthrough() });

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

export function authRoutes(ctx: ApplianceContext): Router {
  const router = Router();

  // ---- public ------------------------------------------------------------------------------
  router.post("/auth/login", async (req, res) => {
    const input = loginRequest.parse(req.body);
    const outcome = await signIn(ctx, input, requestMeta(req, res));
    if (!outcome.ok) {
      if (outcome.reason === "invalid") throw new Unauthorized("the email or password is incorrect", { reason: "invalid_credentials" });
      res.setHeader("Retry-After", String(outcome.retryAfterSeconds));
      throw new TooManyRequests("too many sign-in attempts; wait and try again", { retryAfterSeconds: outcome.retryAfterSeconds });
    }
    res.append("Set-Cookie", sessionCookie(outcome.session.token));
    res.json({
      mfaRequired: outcome.mfaRequired,
      mfaEnrollmentRequired: outcome.mfaEnrollmentRequired,
      csrfToken: outcome.session.csrfToken,
      expiresAt: outcome.session.expiresAt.toISOString(),
    });
  });

  router.post("/invites/accept", async (req, res) => {
    const accepted = await acceptInvite(ctx, acceptInviteRequest.parse(req.body), requestMeta(req, res));
    res.append("Set-Cookie", sessionCookie(accepted.session.token));
    res.status(201).json({
      userId: accepted.userId,
      role: accepted.role,
      tenantId: accepted.tenantId,
      mfaEnrollmentRequired: accepted.mfaEnrollmentRequired,
      csrfToken: accepted.session.csrfToken,
    });
  });

  // ---- the presented session, finished or waiting for its second factor -------------------
  router.get("/auth/session", async (_req, res) => {
    const actor = res.locals.actor as Actor | undefined;
    if (actor?.via === "api-token") {
      res.json({ via: "api-token", stage: "active", user: { id: actor.userId, email: null, role: actor.role, tenantId: actor.tenantId }, scopes: actor.scopes, serverTime: ctx.clock.now().toISOString() });
      return;
    }
    const s = presentedSession(res);
    const token = res.locals.sessionToken as string;
    const idleMinutes = idleMinutesFor(ctx, s.idle_minutes);
    const support = actor?.supportAccess;
    res.json({
      via: "session",
      stage: s.stage,
      user: { id: s.user_id, email: s.email, role: s.role, tenantId: s.tenant_id },
      csrfToken: csrfTokenFor(token),
      idleTimeoutMinutes: idleMinutes,
      idleExpiresAt: new Date(s.last_seen_at.getTime() + idleMinutes * 60_000).toISOString(),
      expiresAt: s.expires_at.toISOString(),
      mfaEnabled: s.mfa_enrolled,
      mfaVerifiedAt: s.mfa_verified_at?.toISOString() ?? null,
      supportAccess: support ? { ...support, expiresAt: support.expiresAt.toISOString() } : null,
      serverTime: ctx.clock.now().toISOString(),
    });
  });

  router.post("/auth/logout", async (req, res) => {
    const s = presentedSession(res);
    await signOut(ctx, { sessionId: s.id, userId: s.user_id, role: s.role, tenantId: s.tenant_id }, requestMeta(req, res));
    res.append("Set-Cookie", clearedSessionCookie());
    res.status(204).end();
  });

  router.post("/auth/mfa", async (req, res) => {
    const input = codeRequest.parse(req.body);
    const s = presentedSession(res);
    if (s.stage === "mfa_enrollment_required") throw new Unauthorized("set up an authenticator first (POST /api/v1/auth/mfa/enroll)", { reason: s.stage });
    const subject: SessionSubject = subjectOfSession(s);
    const attempt = await verifySecondFactor(ctx, subject, input, requestMeta(req, res));
    if (!attempt.ok) failedMfa(res, attempt);
    res.json({ stage: "active", mfaVerifiedAt: ctx.clock.now().toISOString(), ...(attempt.recoveryCodesLeft !== undefined ? { recoveryCodesLeft: attempt.recoveryCodesLeft } : {}) });
  });

  router.post("/auth/mfa/enroll", async (req, res) => {
    const s = presentedSession(res);
    if (s.stage === "mfa_required") throw new Unauthorized("enter the code from your authenticator app first", { reason: s.stage });
    res.json(await startMfaEnrollment(ctx, subjectOfSession(s), requestMeta(req, res)));
  });

  router.post("/auth/mfa/activate", async (req, res) => {
    const { code } = activateRequest.parse(req.body);
    const s = presentedSession(res);
    if (s.stage === "mfa_required") throw new Unauthorized("enter the code from your authenticator app first", { reason: s.stage });
    const attempt = await activateMfa(ctx, subjectOfSession(s), code, requestMeta(req, res));
    if (!attempt.ok) failedMfa(res, attempt);
    res.json({ recoveryCodes: attempt.recoveryCodes, csrfToken: csrfTokenFor(res.locals.sessionToken as string) });
  });

  // ---- guarded -----------------------------------------------------------------------------
  guardedRoute(ctx, router, API, { method: "post", path: "/auth/mfa/recovery-codes", action: "account:manage" }, async (req, res) => {
    res.json({ recoveryCodes: await regenerateRecoveryCodes(ctx, currentActor(res), requestMeta(req, res)) });
  });

  guardedRoute(ctx, router, API, { method: "post", path: "/auth/password", action: "account:manage" }, async (req, res) => {
    await changePassword(ctx, currentActor(res), changePasswordRequest.parse(req.body), requestMeta(req, res));
    res.append("Set-Cookie", clearedSessionCookie());
    res.status(204).end();
  });

  guardedRoute(ctx, router, API, { method: "get", path: "/sessions", action: "session:list" }, async (req, res) => {
    const query = sessionsQuery.parse(req.query);
    res.json(await listSessions(ctx, currentActor(res), query.userId ? { userId: query.userId } : {}));
  });
  guardedRoute(ctx, router, API, { method: "delete", path: "/sessions/:id", action: "session:revoke" }, async (req, res) => {
    await revokeSession(ctx, currentActor(res), idParam.parse(req.params).id, requestMeta(req, res));
    res.status(204).end();
  });
  guardedRoute(ctx, router, API, { method: "post", path: "/sessions/revoke-all", action: "session:revoke" }, async (req, res) => {
    const input = revokeAllRequest.parse(req.body ?? {});
    res.json(await revokeAllSessions(ctx, currentActor(res), { ...(input.userId ? { userId: input.userId } : {}), includeCurrent: input.includeCurrent === true }, requestMeta(req, res)));
  });

  guardedRoute(ctx, router, API, { method: "get", path: "/invites", action: "invite:list" }, async (_req, res) => {
    res.json(await listInvites(ctx, currentActor(res)));
  });
  guardedRoute(ctx, router, API, { method: "post", path: "/invites", action: "invite:create" }, async (req, res) => {
    res.status(201).json(await createInvite(ctx, currentActor(res), createInviteRequest.parse(req.body), requestMeta(req, res)));
  });
  guardedRoute(ctx, router, API, { method: "delete", path: "/invites/:id", action: "invite:revoke" }, async (req, res) => {
    res.json(await revokeInvite(ctx, currentActor(res), idParam.parse(req.params).id, requestMeta(req, res)));
  });

  guardedRoute(ctx, router, API, { method: "get", path: "/api-tokens", action: "api_token:list" }, async (_req, res) => {
    res.json(await listApiTokens(ctx, currentActor(res)));
  });
  guardedRoute(ctx, router, API, { method: "post", path: "/api-tokens", action: "api_token:create" }, async (req, res) => {
    res.status(201).json(await createApiToken(ctx, currentActor(res), createApiTokenRequest.parse(req.body), requestMeta(req, res)));
  });
  guardedRoute(ctx, router, API, { method: "delete", path: "/api-tokens/:id", action: "api_token:revoke" }, async (req, res) => {
    res.json(await revokeApiToken(ctx, currentActor(res), idParam.parse(req.params).id, requestMeta(req, res)));
  });

  return router;
}
