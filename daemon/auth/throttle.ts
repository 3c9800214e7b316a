import { type Tx } from "../db/sql.js";
import type { ApplianceContext } from "../context.js";
import type { TenantAuthPolicy } from "./tenant-policy.js";
import { sha256 } from "./tokens.js";

/**
 * Lockout and rate limits kept in PostgreSQL (`auth_throttle`), so every replica behind the load
 * balancer sees the same counts. Written by hand rather than with a rate-limiting library because
 * the counts must follow `ctx.clock` (tests move time) and commit in the same transaction as the
 * attempt and its audit event.
 */
export type ThrottleRule = {
  max: number;
  windowMs: number;
  lockMs: number;
  /** Adaptive: each further lock without a quiet window in between doubles, up to this. Unset: every lock is lockMs. */
  maxLockMs?: number;
};

export type ThrottleState = { locked: boolean; retryAfterSeconds: number };

/** Bucket names never contain an email address: the account is named by a hash of it. */
export const buckets = {
  loginAccount: (email: string) => `login:account:${sha256(email.trim().toLowerCase()).toString("hex")}`,
  mfaUser: (userId: string) => `mfa:user:${userId}`,
  sourceIp: (ip: string | null) => `ip:${ip ?? "unknown"}`,
  /** One recognised browser on one account: its own guesses lock it, never the account for others. */
  knownDevice: (deviceHash: Buffer, userId: string) => `login:device:${deviceHash.toString("hex")}:${userId}`,
  invite: (inviteId: string) => `invite:${inviteId}`,
};

/** The account lockout rule: config's, or the tenant's own thresholds where its policy sets them. */
export function accountRule(ctx: ApplianceContext, policy?: Pick<TenantAuthPolicy, "lockoutMaxFailures" | "lockoutMinutes">): ThrottleRule {
  const a = ctx.config.auth;
  return {
    max: policy?.lockoutMaxFailures ?? a.lockoutMaxFailures,
    windowMs: a.lockoutWindowMinutes * 60_000,
    lockMs: (policy?.lockoutMinutes ?? a.lockoutMinutes) * 60_000,
  };
}

/**
 * Per client address, for browsers the account does not recognise: a spraying address is refused
 * for ipLockSeconds, then twice as long each time it trips again within a window, up to
 * ipWindowMinutes. A short first refusal keeps a ward behind a NAT from being locked out for long
 * by a few typos; a persistent sprayer is slowed to a handful of guesses per window.
 */
export function ipRule(ctx: ApplianceContext): ThrottleRule {
  const a = ctx.config.auth;
  return { max: a.ipMaxAttempts, windowMs: a.ipWindowMinutes * 60_000, lockMs: a.ipLockSeconds * 1000, maxLockMs: Math.max(a.ipLockSeconds * 1000, a.ipWindowMinutes * 60_000) };
}

type Row = { window_started_at: Date; failures: number; locked_until: Date | null; strikes: number };

/**
 * Locks the bucket's row for the rest of the transaction, so concurrent attempts on one account
 * are counted one after another instead of all slipping past the limit together.
 */
export async function readThrottle(ctx: ApplianceContext, t: Tx, bucket: string): Promise<ThrottleState> {
  const now = ctx.clock.now();
  await t.exec("INSERT INTO auth_throttle (bucket, window_started_at, failures) VALUES ($1, $2, 0) ON CONFLICT (bucket) DO NOTHING", [bucket, now]);
  const [row] = await t.rows<Row>("SELECT window_started_at, failures, locked_until FROM auth_throttle WHERE bucket = $1 FOR UPDATE", [bucket]);
  if (row?.locked_until && row.locked_until > now) {
    return { locked: true, retryAfterSeconds: Math.ceil((row.locked_until.getTime() - now.getTime()) / 1000) };
  }
  return { locked: false, retryAfterSeconds: 0 };
}

/** Counts one failure (or, for rate limits, one attempt); locks the bucket when the count reaches the rule's maximum. */
export async function countFailure(ctx: ApplianceContext, t: Tx, bucket: string, rule: ThrottleRule): Promise<ThrottleState> {
  const now = ctx.clock.now();
  const windowStart = new Date(now.getTime() - rule.windowMs);
  // A whole quiet window since the count last restarted forgives earlier locks (strikes).
  const [row] = await t.rows<Row>(
    `INSERT INTO auth_throttle (bucket, window_started_at, failures) VALUES ($1, $2, 1)
     ON CONFLICT (bucket) DO UPDATE SET
       failures = CASE WHEN auth_throttle.window_started_at <= $3 OR auth_throttle.locked_until <= $2 THEN 1 ELSE auth_throttle.failures + 1 END,
       window_started_at = CASE WHEN auth_throttle.window_started_at <= $3 OR auth_throttle.locked_until <= $2 THEN $2 ELSE auth_throttle.window_started_at END,
       locked_until = CASE WHEN auth_throttle.locked_until <= $2 THEN NULL ELSE auth_throttle.locked_until END,
       strikes = CASE WHEN auth_throttle.window_started_at <= $3 THEN 0 ELSE auth_throttle.strikes END
     RETURNING window_started_at, failures, locked_until, strikes`,
    [bucket, now, windowStart],
  );
  if (row && row.failures >= rule.max) {
    const lockMs = Math.min(rule.lockMs * 2 ** Math.min(row.strikes, 20), rule.maxLockMs ?? rule.lockMs);
    const until = new Date(now.getTime() + lockMs);
    await t.exec("UPDATE auth_throttle SET locked_until = $2, failures = 0, window_started_at = $3, strikes = strikes + 1 WHERE bucket = $1", [bucket, until, now]);
    return { locked: true, retryAfterSeconds: Math.ceil(lockMs / 1000) };
  }
  return { locked: false, retryAfterSeconds: 0 };
}

export async function clearThrottle(ctx: ApplianceContext, t: Tx, bucket: string): Promise<void> {
  await t.exec("DELETE FROM auth_throttle WHERE bucket = $1", [bucket]);
}
