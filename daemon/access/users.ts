import { type Tx } from "../db/sql.js";
import { publishWebhookEvent } from "../webhooks/index.js";
import { z } from "zod";
import { forgetResolvedApiTokens, clearMfa, revokeApiTokensIn, revokeUserSessions } from "../auth/index.js";
import { recordAuthEvent, SYSTEM_ACTOR, type EventActor } from "../audit/append.js";
import { SYSTEM_META, type RequestMeta } from "../kernel/request-meta.js";
import type { ApplianceContext } from "../context.js";
import { inScope } from "../db/sql.js";
import { Conflict, Invalid, NotFound } from "../kernel/errors.js";
import { scopeOf, type Actor, type Role } from "../kernel/actor.js";
import { authorize } from "../kernel/policy.js";
import { updateUserRequest } from "./schema.js";

/** Staff accounts: listing, role changes, deactivation, MFA reset, access reviews, the inactivity job. */
export { updateUserRequest };

export type UserView = {
  id: string;
  tenantId: string | null;
  email: string | null;
  displayName: string | null;
  role: Role;
  kind: "human" | "service";
  status: "active" | "deactivated";
  mfaEnabled: boolean;
  lastLoginAt: string | null;
  createdAt: string;
  deactivatedAt: string | null;
  breakGlassAccount: boolean;
  source: "local" | "scim" | "idp";
};

/** A small number, so that local password sign-in stays the exception it is meant to be (docs/sso.md). */
export const BREAK_GLASS_ACCOUNTS_MAX = 3;

export type AccessReviewEntry = UserView & { activeSessions: number; daysSinceLastLogin: number | null };

type UserRow = {
  id: string;
  tenant_id: string | null;
  email: string | null;
  display_name: string | null;
  role: Role;
  kind: "human" | "service";
  status: "active" | "deactivated";
  mfa_enabled: boolean;
  last_login_at: Date | null;
  created_at: Date;
  deactivated_at: Date | null;
  break_glass_account: boolean;
  source: "local" | "scim" | "idp";
};

const USER_COLUMNS =
  "u.id, u.tenant_id, u.email, u.display_name, u.role, u.kind, u.status, (u.mfa_secret IS NOT NULL) AS mfa_enabled, u.last_login_at, u.created_at, u.deactivated_at, u.break_glass_account, u.source";

function view(r: UserRow): UserView {
  return {
    id: r.id,
    tenantId: r.tenant_id,
    email: r.email,
    displayName: r.display_name,
    role: r.role,
    kind: r.kind,
    status: r.status,
    mfaEnabled: r.mfa_enabled,
    lastLoginAt: r.last_login_at?.toISOString() ?? null,
    createdAt: r.created_at.toISOString(),
    deactivatedAt: r.deactivated_at?.toISOString() ?? null,
    breakGlassAccount: r.break_glass_account,
    source: r.source,
  };
}

/** Tenant staff see their tenant's accounts; super-admins see appliance staff (tenant accounts are seen inside a tenant). */
function tenantFilter(actor: Actor): string {
  return actor.tenantId ? "u.tenant_id = $1" : "u.tenant_id IS NULL AND $1::uuid IS NULL";
}

export async function listUsers(ctx: ApplianceContext, actor: Actor): Promise<UserView[]> {
  authorize(actor, "user:list", { tenantId: actor.tenantId });
  return inScope(ctx.db.app, scopeOf(actor), async (t) => {
    const rows = await t.rows<UserRow>(`SELECT ${USER_COLUMNS} FROM users u WHERE ${tenantFilter(actor)} ORDER BY u.email NULLS LAST, u.created_at`, [actor.tenantId]);
    return rows.map(view);
  });
}

async function loadUser(ctx: ApplianceContext, t: Tx, userId: string, forUpdate = false): Promise<UserRow> {
  const [row] = await t.rows<UserRow>(`SELECT ${USER_COLUMNS} FROM users u WHERE u.id = $1${forUpdate ? " FOR UPDATE" : ""}`, [userId]);
  if (!row) throw new NotFound("no such user");
  return row;
}

export async function getUser(ctx: ApplianceContext, actor: Actor, userId: string): Promise<UserView> {
  return inScope(ctx.db.app, scopeOf(actor), async (t) => {
    const row = await loadUser(ctx, t, userId);
    // Appliance staff may only be managed at appliance level and vice versa: a miss, not a 403.
    if ((row.tenant_id ?? null) !== (actor.tenantId ?? null)) throw new NotFound("no such user");
    authorize(actor, "user:read", { tenantId: row.tenant_id, targetRole: row.role });
    return view(row);
  });
}

async function countOwners(ctx: ApplianceContext, t: Tx, tenantId: string): Promise<number> {
  const [r] = await t.rows<{ n: string }>("SELECT count(*) AS n FROM users WHERE tenant_id = $1 AND role = 'owner' AND status = 'active'", [tenantId]);
  return Number(r!.n);
}

/**
 * Role change and (de)activation. The policy decides who may manage whom (only owners manage
 * owners); this adds the invariants: nobody changes their own role or deactivates themselves, a
 * tenant keeps at least one active owner, service accounts keep their role, and deactivation ends
 * every session at once.
 */
export async function updateUser(ctx: ApplianceContext, actor: Actor, userId: string, input: z.infer<typeof updateUserRequest>, meta: RequestMeta): Promise<UserView> {
  return inScope(ctx.db.app, scopeOf(actor), async (t) => {
    const row = await loadUser(ctx, t, userId, true);
    if ((row.tenant_id ?? null) !== (actor.tenantId ?? null)) throw new NotFound("no such user");
    authorize(actor, "user:update", { tenantId: row.tenant_id, targetRole: row.role });
    if (input.role) authorize(actor, "user:update", { tenantId: row.tenant_id, targetRole: input.role });
    if (userId === actor.userId && (input.role !== undefined || input.status === "deactivated")) {
      throw new Conflict("you cannot change your own role or deactivate yourself; ask another administrator");
    }
    if (input.role && row.kind === "service") throw new Conflict("a service account keeps its role; create a new API token instead");
    if (input.role && (input.role === "super_admin" || input.role === "support") !== (row.tenant_id === null)) {
      throw new Invalid("appliance roles (super-admin, support) and tenant roles cannot be swapped");
    }
    const losesOwner = row.role === "owner" && row.status === "active" && ((input.role && input.role !== "owner") || input.status === "deactivated");
    if (losesOwner && row.tenant_id && (await countOwners(ctx, t, row.tenant_id)) <= 1) throw new Conflict("a tenant needs at least one active owner");
    const now = ctx.clock.now();
    // A service account's role or status changes what its API token may do: no cached answer survives it.
    t.afterCommit(() => forgetResolvedApiTokens(ctx));
    // Deactivation is deprovisionAccount's (below): the same sessions, API tokens, webhook and audit as SCIM's.
    await t.exec(
      `UPDATE users SET role = coalesce($2, role), status = CASE WHEN $3 = 'active' THEN 'active' ELSE status END,
         display_name = CASE WHEN $4::boolean THEN $5 ELSE display_name END,
         deactivated_at = CASE WHEN $3 = 'active' THEN NULL ELSE deactivated_at END,
         deactivated_reason = CASE WHEN $3 = 'active' THEN NULL ELSE deactivated_reason END,
         updated_at = $6
       WHERE id = $1`,
      [userId, input.role ?? null, input.status ?? null, input.displayName !== undefined, input.displayName ?? null, now],
    );
    if (input.role && input.role !== row.role) {
      // A new role takes effect on the next sign-in: sessions holding the old one end now.
      await revokeUserSessions(ctx, t, userId, "role-changed");
      await recordAuthEvent(
        ctx,
        t,
        actor,
        { action: "user.role.change", resourceType: "user", resourceId: userId, outcome: "success", reason: `${row.role} -> ${input.role}` },
        meta,
      );
    }
    if (input.status === "deactivated" && row.status === "active") {
      await deprovisionAccount(ctx, t, actor, { userId, tenantId: row.tenant_id }, "administrator", meta);
    } else if (input.status === "active" && row.status !== "active") {
      await recordAuthEvent(ctx, t, actor, { action: "user.reactivate", resourceType: "user", resourceId: userId, outcome: "success" }, meta);
    }
    if (input.displayName !== undefined) {
      await recordAuthEvent(ctx, t, actor, { action: "user.update", resourceType: "user", resourceId: userId, outcome: "success", reason: "display name" }, meta);
    }
    if (input.breakGlassAccount !== undefined && input.breakGlassAccount !== row.break_glass_account) await setBreakGlassAccount(ctx, t, actor, row, input.breakGlassAccount, meta);
    return view(await loadUser(ctx, t, userId));
  });
}

/**
 * Flags or unflags a break-glass account. Only a person with an authenticator (the account keeps
 * password + TOTP when every IdP is down), at most BREAK_GLASS_ACCOUNTS_MAX per tenant, and a
 * tenant whose local sign-in is for break-glass accounts only keeps at least one.
 */
async function setBreakGlassAccount(ctx: ApplianceContext, t: Tx, actor: Actor, row: UserRow, flag: boolean, meta: RequestMeta): Promise<void> {
  if (!row.tenant_id || row.kind !== "human") throw new Conflict("only a tenant's people can be break-glass accounts");
  const [tenant] = await t.rows<{ local_sign_in: string; flagged: string }>(
    "SELECT tn.local_sign_in, (SELECT count(*) FROM users u WHERE u.tenant_id = tn.id AND u.break_glass_account AND u.status = 'active') AS flagged FROM tenants tn WHERE tn.id = $1 FOR UPDATE",
    [row.tenant_id],
  );
  const flagged = Number(tenant!.flagged);
  if (flag) {
    if (!row.mfa_enabled) throw new Conflict("a break-glass account needs an authenticator app first (it signs in with password and TOTP)");
    if (row.status !== "active") throw new Conflict("reactivate the account before flagging it as a break-glass account");
    if (flagged >= BREAK_GLASS_ACCOUNTS_MAX) throw new Conflict(`a tenant has at most ${BREAK_GLASS_ACCOUNTS_MAX} break-glass accounts`);
  } else if (tenant!.local_sign_in === "break_glass_only" && row.status === "active" && flagged <= 1) {
    throw new Conflict("local sign-in is for break-glass accounts only: keep one, or allow local sign-in for everyone first");
  }
  await t.exec("UPDATE users SET break_glass_account = $2, updated_at = $3 WHERE id = $1", [row.id, flag, ctx.clock.now()]);
  await recordAuthEvent(
    ctx,
    t,
    actor,
    { action: flag ? "user.break_glass_account.set" : "user.break_glass_account.unset", resourceType: "user", resourceId: row.id, outcome: "success" },
    meta,
  );
}

/** Lost phone: removes the user's authenticator and recovery codes and ends their sessions; they enrol again at next sign-in. */
export async function resetUserMfa(ctx: ApplianceContext, actor: Actor, userId: string, meta: RequestMeta): Promise<UserView> {
  return inScope(ctx.db.app, scopeOf(actor), async (t) => {
    const row = await loadUser(ctx, t, userId, true);
    if ((row.tenant_id ?? null) !== (actor.tenantId ?? null)) throw new NotFound("no such user");
    authorize(actor, "user:reset_mfa", { tenantId: row.tenant_id, targetRole: row.role });
    if (userId === actor.userId) throw new Conflict("ask another administrator to reset your own authenticator");
    await clearMfa(ctx, t, userId);
    await revokeUserSessions(ctx, t, userId, "mfa-reset");
    await recordAuthEvent(ctx, t, actor, { action: "user.mfa.reset", resourceType: "user", resourceId: userId, outcome: "success" }, meta);
    return view(await loadUser(ctx, t, userId));
  });
}

/**
 * Access review (HIPAA 164.308(a)(4), ISO 27001 A.5.18): every account with its role, last
 * sign-in, MFA state and open sessions, for the admin's periodic review.
 */
export async function accessReview(ctx: ApplianceContext, actor: Actor): Promise<AccessReviewEntry[]> {
  authorize(actor, "access_review:read", { tenantId: actor.tenantId });
  const now = ctx.clock.now();
  return inScope(ctx.db.app, scopeOf(actor), async (t) => {
    const rows = await t.rows<UserRow & { active_sessions: string }>(
      `SELECT ${USER_COLUMNS},
         (SELECT count(*) FROM sessions s WHERE s.user_id = u.id AND s.revoked_at IS NULL AND s.expires_at > $2) AS active_sessions
       FROM users u WHERE ${tenantFilter(actor)} ORDER BY u.role, u.email NULLS LAST`,
      [actor.tenantId, now],
    );
    return rows.map((r) => ({
      ...view(r),
      activeSessions: Number(r.active_sessions),
      daysSinceLastLogin: r.last_login_at ? Math.floor((now.getTime() - r.last_login_at.getTime()) / 86_400_000) : null,
    }));
  });
}

export type InactivityRun = { deactivated: { userId: string; tenantId: string | null }[] };

/**
 * Unused accounts (part of the `inactive-users` job, daemon/access/background.ts): deactivates
 * human accounts with no sign-in (or, never signed in, no creation) for longer than their
 * tenant's `inactive_user_days` (config `access.inactiveUserDays` by default, which also applies
 * to appliance staff) through `deprovisionAccount`, so their sessions and API tokens end as when
 * an admin deactivates them. Break-glass accounts are left alone: they exist for the day every
 * IdP is down, so going unused is what they are for (access reviews keep or remove them). The
 * last owner of a tenant and the last super-admin stay. Safe to run twice: rows are locked and a
 * deactivated account no longer matches.
 */
export async function deactivateInactiveUsers(ctx: ApplianceContext): Promise<InactivityRun> {
  const now = ctx.clock.now();
  const defaultDays = ctx.config.access.inactiveUserDays;
  return inScope(ctx.db.app, { kind: "appliance" }, async (t) => {
    const stale = await t.rows<{ id: string; tenant_id: string | null; role: Role }>(
      `SELECT u.id, u.tenant_id, u.role FROM users u LEFT JOIN tenants tn ON tn.id = u.tenant_id
       WHERE u.status = 'active' AND u.kind = 'human' AND NOT u.break_glass_account
         AND coalesce(u.last_login_at, u.created_at) < $1::timestamptz - make_interval(days => coalesce(tn.inactive_user_days, $2))
       ORDER BY u.created_at FOR UPDATE OF u`,
      [now, defaultDays],
    );
    const deactivated: InactivityRun["deactivated"] = [];
    for (const u of stale) {
      const done = await deprovisionAccount(ctx, t, SYSTEM_ACTOR, { userId: u.id, tenantId: u.tenant_id }, "inactive", SYSTEM_META, { keepLast: true });
      if (done.deactivated) deactivated.push({ userId: u.id, tenantId: u.tenant_id });
    }
    return { deactivated };
  });
}

export type Deprovisioned = { deactivated: boolean; sessionsEnded: number; apiTokensRevoked: number };

/** Why an account's access ended: its `deactivated_reason`, the webhook's `reason` and the start of the audit reason. */
export type DeprovisionReason = "administrator" | "scim" | "access-review" | "access-review-deadline" | "inactive" | "directory";

/**
 * The one way an account's access ends (an admin's deactivation, SCIM deprovisioning, an access
 * review's removal or deadline, the inactivity job, the LDAP reconcile): deactivates it, ends
 * every session and open just-in-time grant, revokes the API tokens this person created (they
 * were shown the secret once and a leaver may have kept it; `revokeApiTokensIn`), publishes
 * `user.deprovisioned` and audits `user.deactivate` with the reason and counts, in the caller's
 * transaction. Sessions are checked against the database on every request and the status and
 * token changes fire migration 0070's notification, so every replica refuses both on their next
 * request. A tenant keeps one active owner and the appliance one super-admin: a Conflict, or with
 * `keepLast` (jobs) nothing happens and `deactivated` is false.
 */
export async function deprovisionAccount(
  ctx: ApplianceContext,
  t: Tx,
  actor: EventActor,
  target: { userId: string; tenantId: string | null },
  reason: DeprovisionReason,
  meta: RequestMeta,
  opts: { keepLast?: boolean; detail?: string } = {},
): Promise<Deprovisioned> {
  const none = { deactivated: false, sessionsEnded: 0, apiTokensRevoked: 0 };
  const [row] = await t.rows<{ role: Role; status: string }>("SELECT role, status FROM users WHERE id = $1 AND tenant_id IS NOT DISTINCT FROM $2 FOR UPDATE", [
    target.userId,
    target.tenantId,
  ]);
  if (!row) throw new NotFound("no such user");
  if (row.status !== "active") return none;
  const last =
    row.role === "owner" && target.tenantId
      ? (await countOwners(ctx, t, target.tenantId)) <= 1 && "a tenant needs at least one active owner"
      : row.role === "super_admin" && (await countSuperAdmins(t)) <= 1 && "the appliance needs at least one active super-admin";
  if (last) {
    if (opts.keepLast) return none;
    throw new Conflict(last);
  }
  const now = ctx.clock.now();
  await t.exec("UPDATE users SET status = 'deactivated', deactivated_at = $2, deactivated_reason = $3, updated_at = $2 WHERE id = $1", [target.userId, now, reason]);
  const sessionsEnded = await revokeUserSessions(ctx, t, target.userId, `deprovisioned-${reason}`);
  if (target.tenantId) {
    await t.exec(
      "UPDATE privileged_access_grants SET status = 'ended', ended_at = $2, end_reason = 'account-deactivated' WHERE user_id = $1 AND status IN ('pending', 'approved')",
      [target.userId, now],
    );
  }
  const apiTokensRevoked = await revokeApiTokensIn(ctx, t, actor, { createdBy: target.userId }, "creator deprovisioned", meta);
  t.afterCommit(() => forgetResolvedApiTokens(ctx));
  await publishWebhookEvent(ctx, t, { tenantId: target.tenantId, type: "user.deprovisioned", data: { userId: target.userId, reason } });
  await recordAuthEvent(
    ctx,
    t,
    actor,
    {
      action: "user.deactivate",
      resourceType: "user",
      resourceId: target.userId,
      tenantId: target.tenantId,
      outcome: "success",
      reason: `${opts.detail ?? reason}; sessions ${sessionsEnded}; api tokens ${apiTokensRevoked}`,
    },
    meta,
  );
  return { deactivated: true, sessionsEnded, apiTokensRevoked };
}

async function countSuperAdmins(t: Tx): Promise<number> {
  const [r] = await t.rows<{ n: string }>("SELECT count(*) AS n FROM users WHERE tenant_id IS NULL AND role = 'super_admin' AND status = 'active'");
  return Number(r!.n);
}
