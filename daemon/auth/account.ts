import { z } from "zod";
import { scopeOf, type Actor } from "../kernel/actor.js";
import { authorize } from "../kernel/policy.js";
import type { ApplianceContext } from "../context.js";
import { inScope } from "../db/sql.js";
import { Invalid, NotFound, TooManyRequests } from "../kernel/errors.js";
import { recordAuthEvent } from "../audit/append.js";
import type { RequestMeta } from "../kernel/request-meta.js";
import { argon2ParamsFrom, assertPasswordAcceptable, hashPassword, verifyPassword } from "./passwords.js";
import { idleMinutesFor, revokeSessionById, revokeUserSessions } from "./sessions.js";
import { accountRule, buckets, clearThrottle, countFailure, readThrottle } from "./throttle.js";
import { changePasswordRequest } from "./schema.js";
import { tenantAuthPolicy } from "./tenant-policy.js";

/** The signed-in person's own account and sessions, and admins' view of others' sessions. */
export { changePasswordRequest };

export type SessionView = {
  id: string;
  userId: string;
  userEmail: string | null;
  current: boolean;
  stage: string;
  createdAt: string;
  lastSeenAt: string;
  idleExpiresAt: string;
  expiresAt: string;
  mfaVerifiedAt: string | null;
  sourceIp: string | null;
  userAgent: string | null;
  device: string;
  supportAccess: boolean;
};

/** A readable name for a user agent ("Chrome on Linux"), so people recognise their devices. */
export function deviceOf(ua: string | null): string {
  if (!ua) return "Unknown client";
  const browser = /Edg\//.test(ua)
    ? "Edge"
    : /Firefox\//.test(ua)
      ? "Firefox"
      : /Chrom(e|ium)\//.test(ua)
        ? "Chrome"
        : /Safari\//.test(ua)
          ? "Safari"
          : /^node-superagent|^curl\/|^python-/i.test(ua)
            ? "Script"
            : "Other client";
  const os = /Windows/.test(ua) ? "Windows" : /Mac OS X/.test(ua) ? "macOS" : /Android/.test(ua) ? "Android" : /iPhone|iPad/.test(ua) ? "iOS" : /Linux/.test(ua) ? "Linux" : "";
  return os ? `${browser} on ${os}` : browser;
}

type SessionListRow = {
  id: string;
  user_id: string;
  user_email: string | null;
  stage: string;
  created_at: Date;
  last_seen_at: Date;
  expires_at: Date;
  mfa_verified_at: Date | null;
  source_ip: string | null;
  user_agent: string | null;
  support_request_id: string | null;
  idle_timeout_minutes: number | null;
};

/**
 * Changing the password ends every session of the account, this one included (the client signs
 * in again), so a session an attacker opened with the old password does not survive.
 */
export async function changePassword(ctx: ApplianceContext, actor: Actor, input: z.infer<typeof changePasswordRequest>, meta: RequestMeta): Promise<{ sessionsEnded: number }> {
  authorize(actor, "account:manage");
  if (actor.via !== "session" || actor.impersonatorId) throw new Invalid("only the account's owner, signed in, changes its password");
  const outcome = await inScope(ctx.db.app, scopeOf(actor), async (t) => {
    const [user] = await t.rows<{ id: string; email: string; password_hash: string }>("SELECT id, email, password_hash FROM users WHERE id = $1 FOR UPDATE", [actor.userId]);
    if (!user) throw new NotFound("no such account");
    const bucket = buckets.loginAccount(user.email);
    const lock = await readThrottle(ctx, t, bucket);
    if (lock.locked) return { error: new TooManyRequests("too many wrong passwords; wait and try again", { retryAfterSeconds: lock.retryAfterSeconds }) };
    if (!(await verifyPassword(user.password_hash, input.currentPassword))) {
      await countFailure(ctx, t, bucket, accountRule(ctx, await tenantAuthPolicy(t, actor.tenantId)));
      await recordAuthEvent(
        ctx,
        t,
        actor,
        { action: "auth.password.change", resourceType: "user", resourceId: user.id, outcome: "failure", reason: "wrong current password" },
        meta,
      );
      return { error: new Invalid("the current password is not correct") };
    }
    assertPasswordAcceptable(input.newPassword, { email: user.email, minLength: (await tenantAuthPolicy(t, actor.tenantId)).passwordMinLength });
    if (input.newPassword === input.currentPassword) throw new Invalid("choose a password different from the current one");
    const now = ctx.clock.now();
    await t.exec("UPDATE users SET password_hash = $2, password_changed_at = $3, updated_at = $3 WHERE id = $1", [
      user.id,
      await hashPassword(input.newPassword, argon2ParamsFrom(ctx.config)),
      now,
    ]);
    await clearThrottle(ctx, t, bucket);
    const sessionsEnded = await revokeUserSessions(ctx, t, user.id, "password-changed");
    await recordAuthEvent(ctx, t, actor, { action: "auth.password.change", resourceType: "user", resourceId: user.id, outcome: "success" }, meta);
    return { sessionsEnded };
  });
  if ("error" in outcome) throw outcome.error;
  return outcome;
}

/** Own sessions; with `userId`, another account's (admins, in their tenant). */
export async function listSessions(ctx: ApplianceContext, actor: Actor, opts: { userId?: string; all?: boolean } = {}): Promise<SessionView[]> {
  const userId = opts.all ? null : (opts.userId ?? actor.userId);
  if (userId !== actor.userId || actor.impersonatorId) authorize(actor, "session:list_all", { tenantId: actor.tenantId });
  else authorize(actor, "session:list");
  const now = ctx.clock.now();
  return inScope(ctx.db.app, scopeOf(actor), async (t) => {
    const rows = await t.rows<SessionListRow>(
      `SELECT s.id, s.user_id, u.email AS user_email, s.stage, s.created_at, s.last_seen_at, s.expires_at, s.mfa_verified_at, s.source_ip, s.user_agent, s.support_request_id,
              tn.idle_timeout_minutes
       FROM sessions s JOIN users u ON u.id = s.user_id LEFT JOIN tenants tn ON tn.id = s.tenant_id
       WHERE ($1::uuid IS NULL OR s.user_id = $1) AND s.revoked_at IS NULL AND s.expires_at > $2
         AND ${actor.tenantId ? "u.tenant_id = $3" : "u.tenant_id IS NULL AND $3::uuid IS NULL"}
       ORDER BY s.last_seen_at DESC`,
      [userId, now, actor.tenantId],
    );
    return rows
      .map((r) => ({ r, idleEnds: new Date(r.last_seen_at.getTime() + idleMinutesFor(ctx, r.idle_timeout_minutes) * 60_000) }))
      .filter(({ idleEnds }) => idleEnds > now)
      .map(({ r, idleEnds }) => ({
        id: r.id,
        userId: r.user_id,
        userEmail: r.user_email,
        current: r.id === actor.sessionId,
        stage: r.stage,
        createdAt: r.created_at.toISOString(),
        lastSeenAt: r.last_seen_at.toISOString(),
        idleExpiresAt: idleEnds.toISOString(),
        expiresAt: r.expires_at.toISOString(),
        mfaVerifiedAt: r.mfa_verified_at?.toISOString() ?? null,
        sourceIp: r.source_ip,
        userAgent: r.user_agent,
        device: deviceOf(r.user_agent),
        supportAccess: r.support_request_id !== null,
      }));
  });
}

export async function revokeSession(ctx: ApplianceContext, actor: Actor, sessionId: string, meta: RequestMeta): Promise<void> {
  await inScope(ctx.db.app, scopeOf(actor), async (t) => {
    const [row] = await t.rows<{ user_id: string; tenant_id: string | null }>("SELECT user_id, tenant_id FROM sessions WHERE id = $1 AND revoked_at IS NULL", [sessionId]);
    // Appliance staff's sessions are managed at appliance level: inside a tenant they do not exist.
    if (!row || (row.tenant_id ?? null) !== (actor.tenantId ?? null)) throw new NotFound("no such session");
    authorize(actor, "session:revoke", { tenantId: row.tenant_id, ownerId: row.user_id });
    await revokeSessionById(ctx, t, sessionId, row.user_id === actor.userId ? "revoked-by-owner" : "revoked-by-admin");
    await recordAuthEvent(ctx, t, actor, { action: "auth.session.revoke", resourceType: "session", resourceId: sessionId, outcome: "success" }, meta);
  });
}

/** "Sign out everywhere": own sessions (keeping the current one unless asked), or another account's (admins). */
export async function revokeAllSessions(
  ctx: ApplianceContext,
  actor: Actor,
  opts: { userId?: string; includeCurrent?: boolean; everyone?: boolean; reason?: string },
  meta: RequestMeta,
): Promise<{ revoked: number }> {
  if (opts.everyone) return signOutEveryone(ctx, actor, opts.reason ?? "", meta);
  const userId = opts.userId ?? actor.userId;
  const own = userId === actor.userId && !actor.impersonatorId;
  return inScope(ctx.db.app, scopeOf(actor), async (t) => {
    if (!own) {
      const [target] = await t.rows<{ tenant_id: string | null }>("SELECT tenant_id FROM users WHERE id = $1", [userId]);
      if (!target || (target.tenant_id ?? null) !== (actor.tenantId ?? null)) throw new NotFound("no such user");
      authorize(actor, "session:revoke", { tenantId: target.tenant_id, ownerId: userId });
    }
    const revoked = await revokeUserSessions(ctx, t, userId, own ? "revoked-by-owner" : "revoked-by-admin", {
      ...(own && !opts.includeCurrent && actor.sessionId ? { exceptSessionId: actor.sessionId } : {}),
    });
    await recordAuthEvent(
      ctx,
      t,
      actor,
      { action: "auth.session.revoke_all", resourceType: "user", resourceId: userId, outcome: "success", reason: `${revoked} session(s)${opts.reason ? `; ${opts.reason}` : ""}` },
      meta,
    );
    return { revoked };
  });
}

/**
 * Everyone of the tenant (or every appliance staff member, for super-admins) signed out at once,
 * but the caller's own session: after a suspected compromise. Those who may see every session may
 * end them; the reason goes into the audit trail.
 */
async function signOutEveryone(ctx: ApplianceContext, actor: Actor, reason: string, meta: RequestMeta): Promise<{ revoked: number }> {
  authorize(actor, "session:list_all", { tenantId: actor.tenantId });
  return inScope(ctx.db.app, scopeOf(actor), async (t) => {
    const rows = await t.rows<{ id: string }>(
      `UPDATE sessions SET revoked_at = $1, revoked_reason = 'revoked-by-admin'
       WHERE revoked_at IS NULL AND ${actor.tenantId ? "tenant_id = $2" : "tenant_id IS NULL AND $2::uuid IS NULL"} AND ($3::uuid IS NULL OR id <> $3::uuid) RETURNING id`,
      [ctx.clock.now(), actor.tenantId, actor.sessionId ?? null],
    );
    await recordAuthEvent(
      ctx,
      t,
      actor,
      { action: "auth.session.revoke_everyone", resourceType: "tenant", resourceId: actor.tenantId, outcome: "success", reason: `${rows.length} session(s); ${reason}` },
      meta,
    );
    return { revoked: rows.length };
  });
}
