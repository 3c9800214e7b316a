import { type Tx } from "../db/sql.js";
import type { Actor, AuthenticationGap, Role } from "../kernel/actor.js";
import type { ApplianceContext } from "../context.js";
import { inScope } from "../db/sql.js";
import { recordAuthEvent } from "../audit/append.js";
import type { RequestMeta } from "../kernel/request-meta.js";
import { csrfTokenFor, randomToken, SESSION_TOKEN_PREFIX, sha256 } from "./tokens.js";

export type SessionStage = "mfa_required" | "mfa_enrollment_required" | "active";

export type SessionRow = {
  id: string;
  user_id: string;
  tenant_id: string | null;
  stage: SessionStage;
  created_at: Date;
  last_seen_at: Date;
  expires_at: Date;
  mfa_verified_at: Date | null;
  revoked_at: Date | null;
  support_request_id: string | null;
};

export type ResolvedSession = SessionRow & {
  role: Role;
  email: string | null;
  display_name: string | null;
  user_status: string;
  mfa_enrolled: boolean;
  tenant_status: string | null;
  idle_minutes: number;
};

export type IssuedSession = { id: string; token: string; csrfToken: string; stage: SessionStage; expiresAt: Date };

/** The idle timeout that applies to a tenant (or to appliance staff, who have no tenant). */
export function idleMinutesFor(ctx: ApplianceContext, tenantIdleMinutes: number | null | undefined): number {
  return tenantIdleMinutes ?? ctx.config.auth.idleTimeoutMinutes;
}

/** Issues a session: a random token for the cookie, only its SHA-256 in the table. */
export async function issueSession(
  ctx: ApplianceContext,
  t: Tx,
  input: { userId: string; tenantId: string | null; stage: SessionStage; mfaVerifiedAt?: Date | null },
  meta: RequestMeta,
): Promise<IssuedSession> {
  const now = ctx.clock.now();
  const token = randomToken(SESSION_TOKEN_PREFIX);
  // Absolute lifetime: a stolen cookie stops working at this time at the latest, active or not.
  const expiresAt = new Date(now.getTime() + ctx.config.auth.absoluteLifetimeHours * 3_600_000);
  const [row] = await t.rows<{ id: string }>(
    `INSERT INTO sessions (token_hash, user_id, tenant_id, stage, created_at, last_seen_at, expires_at, mfa_verified_at, source_ip, user_agent)
     VALUES ($1, $2, $3, $4, $5, $5, $6, $7, $8, $9) RETURNING id`,
    [sha256(token), input.userId, input.tenantId, input.stage, now, expiresAt, input.mfaVerifiedAt ?? null, meta.sourceIp, meta.userAgent],
  );
  return { id: row!.id, token, csrfToken: csrfTokenFor(token), stage: input.stage, expiresAt };
}

/** Ends sessions of one user (password change, deactivation, MFA reset, admin "sign out everywhere"). */
export async function revokeUserSessions(ctx: ApplianceContext, t: Tx, userId: string, reason: string, opts: { exceptSessionId?: string } = {}): Promise<number> {
  const rows = await t.rows<{ id: string }>(
    `UPDATE sessions SET revoked_at = $2, revoked_reason = $3
     WHERE user_id = $1 AND revoked_at IS NULL AND ($4::uuid IS NULL OR id <> $4::uuid) RETURNING id`,
    [userId, ctx.clock.now(), reason, opts.exceptSessionId ?? null],
  );
  return rows.length;
}

export async function revokeSessionById(ctx: ApplianceContext, t: Tx, sessionId: string, reason: string): Promise<boolean> {
  const rows = await t.rows<{ id: string }>("UPDATE sessions SET revoked_at = $2, revoked_reason = $3 WHERE id = $1 AND revoked_at IS NULL RETURNING id", [
    sessionId,
    ctx.clock.now(),
    reason,
  ]);
  return rows.length > 0;
}

export type SessionLookup =
  | { state: "none" }
  | { state: "ended"; gap: AuthenticationGap }
  | { state: "pending"; session: ResolvedSession; gap: AuthenticationGap }
  | { state: "active"; session: ResolvedSession; actor: Actor };

type SupportRow = { id: string; tenant_id: string; status: string; expires_at: Date | null; decided_by: string | null; approver_name: string | null; requested_by: string };

/**
 * Finds the session a cookie names and decides whether it still stands: not revoked, within its
 * absolute lifetime, used within the idle timeout (45 CFR 164.312(a)(2)(iii) automatic logoff),
 * and its account and tenant still active. A session that fails a check is revoked on the spot.
 *
 * The lookup runs in appliance scope because the tenant is not known until the row is found; the
 * key is the hash of a 256-bit secret, so only the presenter's own session can come back.
 */
export async function resolveSession(ctx: ApplianceContext, token: string, opts: { touch: boolean; meta: RequestMeta }): Promise<SessionLookup> {
  return inScope(ctx.db.app, { kind: "appliance" }, async (t) => {
    const [s] = await t.rows<ResolvedSession>(
      `SELECT s.id, s.user_id, s.tenant_id, s.stage, s.created_at, s.last_seen_at, s.expires_at, s.mfa_verified_at, s.revoked_at,
              s.support_request_id, coalesce(jit.role, u.role) AS role, u.email, u.display_name, u.status AS user_status, (u.mfa_secret IS NOT NULL) AS mfa_enrolled,
              tn.status AS tenant_status, tn.idle_timeout_minutes AS idle_minutes
       FROM sessions s JOIN users u ON u.id = s.user_id LEFT JOIN tenants tn ON tn.id = s.tenant_id
       -- Just-in-time privileged access (access/privileged-access.ts): an approved grant is the
       -- session's role until its expiry, judged by this request's clock on whichever replica.
       LEFT JOIN LATERAL (
         SELECT g.role FROM privileged_access_grants g
          WHERE g.user_id = s.user_id AND g.tenant_id = s.tenant_id AND g.status = 'approved' AND g.expires_at > $2
          LIMIT 1
       ) jit ON true
       WHERE s.token_hash = $1`,
      [sha256(token), ctx.clock.now()],
    );
    if (!s) return { state: "none" as const };
    s.idle_minutes = idleMinutesFor(ctx, s.idle_minutes);
    if (s.revoked_at) return { state: "ended" as const, gap: { reason: "session_revoked" as const } };
    const now = ctx.clock.now();
    const end = async (reason: string, gap: AuthenticationGap) => {
      await revokeSessionById(ctx, t, s.id, reason);
      await recordAuthEvent(
        ctx,
        t,
        { userId: s.user_id, role: s.role, tenantId: s.tenant_id },
        { action: "auth.session.end", resourceType: "session", resourceId: s.id, outcome: "success", reason },
        opts.meta,
      );
      return { state: "ended" as const, gap };
    };
    if (now >= s.expires_at) return end("absolute-lifetime", { reason: "session_expired" });
    if (now.getTime() - s.last_seen_at.getTime() >= s.idle_minutes * 60_000) {
      return end("idle-timeout", { reason: "idle_timeout", idleMinutes: s.idle_minutes });
    }
    if (s.user_status !== "active" || (s.tenant_id && s.tenant_status !== "active")) {
      return end("account-or-tenant-inactive", { reason: "session_revoked" });
    }
    if (opts.touch) {
      await t.exec("UPDATE sessions SET last_seen_at = $2 WHERE id = $1", [s.id, now]);
      s.last_seen_at = now;
    }
    if (s.stage !== "active") return { state: "pending" as const, session: s, gap: { reason: s.stage } };

    const actor: Actor = {
      userId: s.user_id,
      role: s.role,
      tenantId: s.tenant_id,
      via: "session",
      sessionId: s.id,
      ...(s.mfa_verified_at ? { mfaVerifiedAt: s.mfa_verified_at } : {}),
    };
    if (s.support_request_id && s.role === "support") {
      const [req] = await t.rows<SupportRow>(
        `SELECT r.id, r.tenant_id, r.status, r.expires_at, r.decided_by, r.requested_by, coalesce(u.display_name, u.email) AS approver_name
           FROM support_requests r LEFT JOIN users u ON u.id = r.decided_by WHERE r.id = $1`,
        [s.support_request_id],
      );
      if (req && req.status === "approved" && req.expires_at && req.expires_at > now && req.requested_by === s.user_id && req.decided_by) {
        // Acting for the approving admin, as support: both identities reach every audit event.
        actor.userId = req.decided_by;
        actor.tenantId = req.tenant_id;
        actor.impersonatorId = s.user_id;
        actor.supportAccess = {
          requestId: req.id,
          supportUserId: s.user_id,
          approvedBy: req.decided_by,
          approvedByName: req.approver_name ?? "a tenant administrator",
          expiresAt: req.expires_at,
        };
      } else {
        await t.exec("UPDATE sessions SET support_request_id = NULL WHERE id = $1", [s.id]);
        s.support_request_id = null;
      }
    }
    return { state: "active" as const, session: s, actor };
  });
}
