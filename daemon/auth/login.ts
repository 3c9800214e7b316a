import { z } from "zod";
import type { Role } from "../kernel/actor.js";
import type { ApplianceContext } from "../context.js";
import { inScope, type Tx } from "../db/sql.js";
import { recordAuthEvent, type EventActor } from "../audit/append.js";
import { raiseAlert } from "../alerts/index.js";
import type { RequestMeta } from "../kernel/request-meta.js";
import { argon2ParamsFrom, burnPasswordCheck, hashPassword, needsRehash, verifyPassword } from "./passwords.js";
import { issueSession, revokeSessionById, type IssuedSession, type SessionStage } from "./sessions.js";
import { accountRule, buckets, clearThrottle, countFailure, ipRule, readThrottle } from "./throttle.js";
import { deviceHashOf, isKnownDevice, newDeviceToken, rememberDevice } from "./known-devices.js";
import { loginRequest } from "./schema.js";
import { POLICY_COLUMNS, policyFromRow, type PolicyRow } from "./tenant-policy.js";

export { loginRequest };
export type LoginRequest = z.infer<typeof loginRequest>;

export type LoginOutcome =
  | { ok: true; session: IssuedSession; userId: string; mfaRequired: boolean; mfaEnrollmentRequired: boolean; deviceToken: string }
  | { ok: false; reason: "invalid" | "locked" | "rate_limited"; retryAfterSeconds: number }
  | { ok: false; reason: "local_sign_in_off" };

type LoginUserRow = {
  id: string;
  tenant_id: string | null;
  role: Role;
  status: string;
  password_hash: string;
  mfa_enrolled: boolean;
  tenant_status: string | null;
  break_glass_account: boolean;
  local_sign_in: string | null;
} & PolicyRow;

/**
 * Whether an account must have an authenticator before it gets a full session: config for
 * appliance staff, the tenant's policy (every role, or the roles it names) for tenant staff.
 */
export function mfaEnforcedFor(ctx: ApplianceContext, role: Role, tenantMfaRequired: boolean | null, tenantMfaRoles: string[] = []): boolean {
  if (role === "super_admin" || role === "support") return ctx.config.auth.mfaRequiredForApplianceStaff;
  return tenantMfaRequired === true || tenantMfaRoles.includes(role);
}

export function stageFor(ctx: ApplianceContext, u: { role: Role; mfa_enrolled: boolean; tenant_mfa_required: boolean | null; tenant_mfa_roles?: string[] | null }): SessionStage {
  if (u.mfa_enrolled) return "mfa_required";
  return mfaEnforcedFor(ctx, u.role, u.tenant_mfa_required, u.tenant_mfa_roles ?? []) ? "mfa_enrollment_required" : "active";
}

/**
 * Step one of sign-in. Whatever goes wrong before the password is proven — no such account,
 * deactivated, service account, wrong password — answers the same way after the same argon2id
 * work, so the response does not reveal which addresses have accounts.
 *
 * Limits, all in PostgreSQL so every replica counts together (docs/hardening.md "Sign-in limits"):
 * a browser the account does not recognise counts its failures per account (lockout) and per
 * client address (password spraying, adaptive); a browser that signed in to the account before
 * (device cookie) is exempt from both, so the ward behind a NAT keeps signing in while a sprayer
 * at the same address is refused, and its own failures lock only itself.
 *
 * The lookup runs in appliance scope: the tenant is not known until the account is found.
 */
export async function signIn(ctx: ApplianceContext, input: LoginRequest, meta: RequestMeta, device: { cookie?: string } = {}): Promise<LoginOutcome> {
  const params = argon2ParamsFrom(ctx.config);
  return inScope(ctx.db.app, { kind: "appliance" }, async (t) => {
    const [user] = await t.rows<LoginUserRow>(
      `SELECT u.id, u.tenant_id, u.role, u.status, u.password_hash, (u.mfa_secret IS NOT NULL) AS mfa_enrolled,
              tn.status AS tenant_status, ${POLICY_COLUMNS}, u.break_glass_account, tn.local_sign_in
       FROM users u LEFT JOIN tenants tn ON tn.id = u.tenant_id
       WHERE u.email = $1 AND u.kind = 'human'`,
      [input.email],
    );
    const who = user ? { userId: user.id, role: user.role, tenantId: user.tenant_id } : null;
    const presented = deviceHashOf(device.cookie);
    const known = user && presented && (await isKnownDevice(ctx, t, presented, user.id)) ? presented : null;
    // A recognised browser answers for itself; anyone else for the account and the address.
    const ipBucket = buckets.sourceIp(meta.sourceIp);
    const accountBucket = known && user ? buckets.knownDevice(known, user.id) : buckets.loginAccount(input.email);
    if (!known) {
      const ip = await readThrottle(ctx, t, ipBucket);
      if (ip.locked) {
        await recordAuthEvent(ctx, t, null, { action: "auth.login", resourceType: "session", outcome: "denied", reason: "source rate limited" }, meta);
        return { ok: false as const, reason: "rate_limited" as const, retryAfterSeconds: ip.retryAfterSeconds };
      }
    }
    const lock = await readThrottle(ctx, t, accountBucket);
    if (lock.locked) {
      await burnPasswordCheck(input.password, params);
      const reason = known ? "device locked" : "account locked";
      await recordAuthEvent(ctx, t, who, { action: "auth.login", resourceType: "session", outcome: "denied", reason }, meta);
      return { ok: false as const, reason: "locked" as const, retryAfterSeconds: lock.retryAfterSeconds };
    }
    const usable = user && user.status === "active" && (user.tenant_id === null || user.tenant_status === "active");
    const passwordOk = usable ? await verifyPassword(user.password_hash, input.password) : (await burnPasswordCheck(input.password, params), false);
    if (!usable || !passwordOk) {
      // The tenant's own lockout thresholds apply to its accounts; unknown addresses get config's.
      const account = await countFailure(ctx, t, accountBucket, accountRule(ctx, user ? policyFromRow(user) : undefined));
      const ip = known ? null : await countFailure(ctx, t, ipBucket, ipRule(ctx));
      const reason = !user ? "unknown account" : !usable ? "account or tenant inactive" : "wrong password";
      await recordAuthEvent(ctx, t, who, { action: "auth.login", resourceType: "session", outcome: "failure", reason }, meta);
      if (account.locked) {
        await recordAuthEvent(
          ctx,
          t,
          who,
          {
            action: "auth.lockout",
            resourceType: "user",
            resourceId: user?.id ?? null,
            outcome: "success",
            reason: known ? "too many failed sign-ins from one recognised browser" : "too many failed sign-ins",
          },
          meta,
        );
      }
      // The failure that trips a limit is already answered as refused, so the next try is not a surprise.
      if (account.locked) return { ok: false as const, reason: "locked" as const, retryAfterSeconds: account.retryAfterSeconds };
      if (ip?.locked) return { ok: false as const, reason: "rate_limited" as const, retryAfterSeconds: ip.retryAfterSeconds };
      return { ok: false as const, reason: "invalid" as const, retryAfterSeconds: 0 };
    }
    await clearThrottle(ctx, t, accountBucket);
    // Past the password: only someone who knows it learns that local sign-in is off for them.
    if (user.tenant_id && user.local_sign_in === "break_glass_only" && !user.break_glass_account) {
      await recordAuthEvent(ctx, t, who, { action: "auth.login", resourceType: "session", outcome: "denied", reason: "local sign-in is for break-glass accounts only" }, meta);
      return { ok: false as const, reason: "local_sign_in_off" as const };
    }
    if (user.break_glass_account && user.tenant_id) await recordBreakGlassAccountUse(ctx, t, user.id, user.tenant_id, who, meta);
    const deviceToken = known && device.cookie ? device.cookie : newDeviceToken();
    await rememberDevice(ctx, t, known ?? deviceHashOf(deviceToken)!, { id: user.id, tenantId: user.tenant_id });
    const now = ctx.clock.now();
    if (needsRehash(user.password_hash, params)) {
      // Parameters were raised in config: upgrade the stored hash while the password is at hand.
      await t.exec("UPDATE users SET password_hash = $2, updated_at = $3 WHERE id = $1", [user.id, await hashPassword(input.password, params), now]);
    }
    const stage = stageFor(ctx, { role: user.role, mfa_enrolled: user.mfa_enrolled, tenant_mfa_required: user.policy_mfa_required, tenant_mfa_roles: user.policy_mfa_roles });
    if (stage === "active") await t.exec("UPDATE users SET last_login_at = $2 WHERE id = $1", [user.id, now]);
    const session = await issueSession(ctx, t, { userId: user.id, tenantId: user.tenant_id, stage }, meta);
    await recordAuthEvent(
      ctx,
      t,
      who,
      { action: "auth.login", resourceType: "session", resourceId: session.id, outcome: "success", reason: stage === "active" ? null : stage },
      meta,
    );
    return {
      ok: true as const,
      session,
      userId: user.id,
      mfaRequired: stage === "mfa_required",
      mfaEnrollmentRequired: stage === "mfa_enrollment_required",
      deviceToken,
    };
  });
}

/**
 * A break-glass account signed in with its password (its TOTP step follows): a critical alert for
 * the tenant's admins and an audit event, every time. Keyed by account, so repeated use shows as
 * occurrences of one open alert until someone acknowledges it.
 */
async function recordBreakGlassAccountUse(ctx: ApplianceContext, t: Tx, userId: string, tenantId: string, who: EventActor, meta: RequestMeta): Promise<void> {
  await raiseAlert(
    ctx,
    {
      kind: "auth.break_glass_account_used",
      severity: "critical",
      key: userId,
      tenantId,
      summary: `break-glass account ${userId} signed in with its local password`,
      details: { userId },
    },
    t,
  );
  await recordAuthEvent(ctx, t, who, { action: "auth.break_glass_account.use", resourceType: "user", resourceId: userId, tenantId, outcome: "success" }, meta);
}

/** Ends the presenter's own session. */
export async function signOut(ctx: ApplianceContext, s: { sessionId: string; userId: string; role: string; tenantId: string | null }, meta: RequestMeta): Promise<void> {
  await inScope(ctx.db.app, s.tenantId ? { kind: "tenant", tenantId: s.tenantId } : { kind: "appliance" }, async (t) => {
    await revokeSessionById(ctx, t, s.sessionId, "sign-out");
    await recordAuthEvent(
      ctx,
      t,
      { userId: s.userId, role: s.role, tenantId: s.tenantId },
      { action: "auth.logout", resourceType: "session", resourceId: s.sessionId, outcome: "success" },
      meta,
    );
  });
}
