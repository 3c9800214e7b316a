import { randomBytes } from "node:crypto";
import { type Tx } from "../db/sql.js";
import speakeasy from "speakeasy";
import type { Actor } from "../kernel/actor.js";
import type { ApplianceContext } from "../context.js";
import { inScope, type Scope } from "../db/sql.js";
import { Conflict, Invalid } from "../kernel/errors.js";
import { recordAuthEvent } from "../audit/append.js";
import type { RequestMeta } from "../kernel/request-meta.js";
import { openSecret, sealSecret } from "./secret-box.js";
import type { ResolvedSession } from "./sessions.js";
import { requireRecentMfa } from "./step-up.js";
import { accountRule, buckets, clearThrottle, countFailure, readThrottle } from "./throttle.js";
import { tenantAuthPolicy } from "./tenant-policy.js";
import { sha256 } from "./tokens.js";

/**
 * TOTP (RFC 6238: SHA-1, 6 digits, 30-second steps — what every authenticator app and
 * `oathtool --totp` speak) through speakeasy, with recovery codes for a lost phone.
 */
const STEP_SECONDS = 30;
/** One step either side: tolerates 30 s of clock drift between the phone and the appliance. */
const DRIFT_WINDOW = 1;
export const RECOVERY_CODE_COUNT = 10;

const BASE32 = "ABCDEFGHIJKLMNOPQRSTUVWXYZ234567";

/** RFC 4648 base32 without padding, the form authenticator apps and `oathtool -b` read. */
export function base32(bytes: Buffer): string {
  let bits = 0;
  let value = 0;
  let out = "";
  for (const byte of bytes) {
    value = (value << 8) | byte;
    bits += 8;
    while (bits >= 5) {
      out += BASE32[(value >>> (bits - 5)) & 31];
      bits -= 5;
    }
  }
  if (bits > 0) out += BASE32[(value << (5 - bits)) & 31];
  return out;
}

/** 160-bit secret: RFC 4226 §4 recommends the HMAC-SHA-1 output length. */
export function newTotpSecret(): string {
  return base32(randomBytes(20));
}

/** The time step a code belongs to, or null when it matches none within the drift window. */
export function matchTotp(secretBase32: string, code: string, now: Date, window: number = DRIFT_WINDOW): number | null {
  if (!/^\d{6}$/.test(code)) return null;
  const time = Math.floor(now.getTime() / 1000);
  const delta = speakeasy.totp.verifyDelta({ secret: secretBase32, encoding: "base32", token: code, window, time, step: STEP_SECONDS });
  if (!delta) return null;
  return Math.floor(time / STEP_SECONDS) + delta.delta;
}

/** 80 random bits each, grouped for reading aloud: xxxx-xxxx-xxxx-xxxx. */
export function newRecoveryCodes(): string[] {
  return Array.from({ length: RECOVERY_CODE_COUNT }, () => base32(randomBytes(10)).toLowerCase().match(/.{4}/g)!.join("-"));
}

function normaliseRecoveryCode(code: string): string {
  return code.toLowerCase().replace(/[\s-]/g, "");
}

function recoveryCodeHash(code: string): Buffer {
  return sha256(`wardkeep/recovery/v1:${normaliseRecoveryCode(code)}`);
}

type MfaUserRow = {
  id: string;
  email: string | null;
  role: string;
  tenant_id: string | null;
  mfa_secret: Buffer | null;
  mfa_pending_secret: Buffer | null;
  mfa_last_step: string | null;
};

function scopeForTenant(tenantId: string | null): Scope {
  return tenantId ? { kind: "tenant", tenantId } : { kind: "appliance" };
}

async function loadMfaUser(ctx: ApplianceContext, t: Tx, userId: string): Promise<MfaUserRow> {
  const [user] = await t.rows<MfaUserRow>("SELECT id, email, role, tenant_id, mfa_secret, mfa_pending_secret, mfa_last_step FROM users WHERE id = $1 FOR UPDATE", [userId]);
  if (!user) throw new Conflict("the account no longer exists");
  return user;
}

async function storeRecoveryCodes(ctx: ApplianceContext, t: Tx, user: { id: string; tenant_id: string | null }): Promise<string[]> {
  const codes = newRecoveryCodes();
  const now = ctx.clock.now();
  await t.exec("DELETE FROM mfa_recovery_codes WHERE user_id = $1", [user.id]);
  for (const code of codes) {
    await t.exec("INSERT INTO mfa_recovery_codes (user_id, tenant_id, code_hash, created_at) VALUES ($1, $2, $3, $4)", [user.id, user.tenant_id, recoveryCodeHash(code), now]);
  }
  return codes;
}

export type Enrollment = { secret: string; otpauthUrl: string; qrCodeDataUrl: string };

/** Who is enrolling: a pending session (first sign-in) or a signed-in actor adding MFA. */
export type SessionSubject = { sessionId: string; userId: string; tenantId: string | null; role: string; stage: ResolvedSession["stage"] };

export function subjectOfSession(s: ResolvedSession): SessionSubject {
  return { sessionId: s.id, userId: s.user_id, tenantId: s.tenant_id, role: s.role, stage: s.stage };
}

export function subjectOfActor(actor: Actor): SessionSubject {
  if (actor.via !== "session" || !actor.sessionId || actor.impersonatorId) throw new Invalid("only a person signed in with a session manages their own authenticator");
  return { sessionId: actor.sessionId, userId: actor.userId, tenantId: actor.tenantId, role: actor.role, stage: "active" };
}

/**
 * Starts enrollment: a fresh secret kept sealed as "pending" until a code from it is entered,
 * so a half-finished enrollment never locks anyone out.
 */
export async function startMfaEnrollment(ctx: ApplianceContext, subject: SessionSubject, meta: RequestMeta): Promise<Enrollment> {
  const secret = newTotpSecret();
  const email = await inScope(ctx.db.app, scopeForTenant(subject.tenantId), async (t) => {
    const user = await loadMfaUser(ctx, t, subject.userId);
    if (user.mfa_secret) throw new Conflict("an authenticator is already set up; ask an administrator to reset it to enrol a new one");
    await t.exec("UPDATE users SET mfa_pending_secret = $2, updated_at = $3 WHERE id = $1", [user.id, sealSecret(ctx.rootKey, secret, user.id), ctx.clock.now()]);
    await recordAuthEvent(
      ctx,
      t,
      { userId: user.id, role: user.role, tenantId: user.tenant_id },
      { action: "auth.mfa.enroll.start", resourceType: "user", resourceId: user.id, outcome: "success" },
      meta,
    );
    return user.email;
  });
  const otpauthUrl = speakeasy.otpauthURL({
    secret,
    encoding: "base32",
    label: `${ctx.config.auth.mfaIssuer}:${email ?? subject.userId}`,
    issuer: ctx.config.auth.mfaIssuer,
    algorithm: "sha1",
    digits: 6,
    period: STEP_SECONDS,
  });
  // qrcode loads with the first enrolment, not with the module (CLI commands start faster without it).
  const { default: QRCode } = await import("qrcode");
  const qrCodeDataUrl = await QRCode.toDataURL(otpauthUrl, { errorCorrectionLevel: "M", margin: 2, width: 240 });
  return { secret, otpauthUrl, qrCodeDataUrl };
}

export type MfaAttempt = { ok: true; recoveryCodes?: string[]; recoveryCodesLeft?: number } | { ok: false; locked: boolean; retryAfterSeconds: number };

/** Ends enrollment with a code from the new secret; returns the recovery codes (shown once). */
export async function activateMfa(ctx: ApplianceContext, subject: SessionSubject, code: string, meta: RequestMeta): Promise<MfaAttempt> {
  return inScope(ctx.db.app, scopeForTenant(subject.tenantId), async (t) => {
    // The account row first, then its throttle row: one lock order for every second-factor attempt (see verifySecondFactor).
    const user = await loadMfaUser(ctx, t, subject.userId);
    const throttle = await readThrottle(ctx, t, buckets.mfaUser(subject.userId));
    if (throttle.locked) return { ok: false as const, ...throttle };
    if (user.mfa_secret) throw new Conflict("an authenticator is already set up");
    if (!user.mfa_pending_secret) throw new Conflict("start enrollment first (POST /api/v1/auth/mfa/enroll)");
    const secret = openSecret(ctx.rootKey, user.mfa_pending_secret, user.id);
    const now = ctx.clock.now();
    const policy = await tenantAuthPolicy(t, user.tenant_id);
    const step = matchTotp(secret, code, now, policy.totpWindowSteps ?? DRIFT_WINDOW);
    const who = { userId: user.id, role: user.role, tenantId: user.tenant_id };
    if (step === null) {
      const state = await countFailure(ctx, t, buckets.mfaUser(user.id), accountRule(ctx, policy));
      await recordAuthEvent(ctx, t, who, { action: "auth.mfa.enroll.activate", resourceType: "user", resourceId: user.id, outcome: "failure", reason: "wrong code" }, meta);
      return { ok: false as const, ...state };
    }
    await t.exec("UPDATE users SET mfa_secret = mfa_pending_secret, mfa_pending_secret = NULL, mfa_enrolled_at = $2, mfa_last_step = $3, updated_at = $2 WHERE id = $1", [
      user.id,
      now,
      step,
    ]);
    const recoveryCodes = await storeRecoveryCodes(ctx, t, user);
    await completeSecondFactor(ctx, t, subject, now);
    await clearThrottle(ctx, t, buckets.mfaUser(user.id));
    await recordAuthEvent(ctx, t, who, { action: "auth.mfa.enroll.activate", resourceType: "user", resourceId: user.id, outcome: "success" }, meta);
    return { ok: true as const, recoveryCodes };
  });
}

/** A session that proves a second factor becomes active (first sign-in) or refreshes its step-up time. */
async function completeSecondFactor(ctx: ApplianceContext, t: Tx, subject: SessionSubject, now: Date) {
  await t.exec("UPDATE sessions SET stage = 'active', mfa_verified_at = $2, last_seen_at = $2 WHERE id = $1", [subject.sessionId, now]);
  if (subject.stage !== "active") {
    await t.exec("UPDATE users SET last_login_at = $2 WHERE id = $1", [subject.userId, now]);
  }
}

/**
 * Checks a TOTP code (or a single-use recovery code) for the second step of sign-in, or for
 * step-up on an active session. Codes are accepted once (RFC 6238 §5.2); failures count towards
 * the account's MFA lockout.
 */
export async function verifySecondFactor(ctx: ApplianceContext, subject: SessionSubject, input: { code?: string; recoveryCode?: string }, meta: RequestMeta): Promise<MfaAttempt> {
  return inScope(ctx.db.app, scopeForTenant(subject.tenantId), async (t) => {
    // Concurrent attempts for one account queue on its row, taken before the throttle row. The
    // reverse order deadlocked: an attempt that found the throttle row just deleted by a success
    // went on to lock the account, while a later one re-created the throttle row and waited for it.
    const user = await loadMfaUser(ctx, t, subject.userId);
    const throttle = await readThrottle(ctx, t, buckets.mfaUser(subject.userId));
    const who = { userId: user.id, role: user.role, tenantId: user.tenant_id };
    const action = subject.stage === "active" ? "auth.mfa.step_up" : "auth.mfa.verify";
    if (throttle.locked) {
      await recordAuthEvent(ctx, t, who, { action, resourceType: "user", resourceId: user.id, outcome: "denied", reason: "locked out" }, meta);
      return { ok: false as const, ...throttle };
    }
    if (!user.mfa_secret) throw new Conflict("no authenticator is set up for this account");
    const now = ctx.clock.now();
    const policy = await tenantAuthPolicy(t, user.tenant_id);
    let ok = false;
    let recoveryCodesLeft: number | undefined;
    if (input.code !== undefined) {
      // The tenant's drift window: 0 accepts only the current 30 s step, 2 up to a minute either way.
      const step = matchTotp(openSecret(ctx.rootKey, user.mfa_secret, user.id), input.code, now, policy.totpWindowSteps ?? DRIFT_WINDOW);
      if (step !== null && (user.mfa_last_step === null || step > Number(user.mfa_last_step))) {
        await t.exec("UPDATE users SET mfa_last_step = $2 WHERE id = $1", [user.id, step]);
        ok = true;
      }
    } else if (input.recoveryCode !== undefined) {
      const used = await t.rows<{ id: string }>("UPDATE mfa_recovery_codes SET used_at = $3 WHERE user_id = $1 AND code_hash = $2 AND used_at IS NULL RETURNING id", [
        user.id,
        recoveryCodeHash(input.recoveryCode),
        now,
      ]);
      if (used.length) {
        ok = true;
        const [left] = await t.rows<{ n: string }>("SELECT count(*) AS n FROM mfa_recovery_codes WHERE user_id = $1 AND used_at IS NULL", [user.id]);
        recoveryCodesLeft = Number(left!.n);
      }
    }
    if (!ok) {
      const state = await countFailure(ctx, t, buckets.mfaUser(user.id), accountRule(ctx, policy));
      await recordAuthEvent(
        ctx,
        t,
        who,
        { action, resourceType: "user", resourceId: user.id, outcome: "failure", reason: input.code !== undefined ? "wrong or reused code" : "wrong or used recovery code" },
        meta,
      );
      return { ok: false as const, ...state };
    }
    await completeSecondFactor(ctx, t, subject, now);
    await clearThrottle(ctx, t, buckets.mfaUser(user.id));
    await recordAuthEvent(
      ctx,
      t,
      who,
      { action, resourceType: "user", resourceId: user.id, outcome: "success", reason: input.recoveryCode !== undefined ? "recovery code" : null },
      meta,
    );
    return { ok: true as const, ...(recoveryCodesLeft !== undefined ? { recoveryCodesLeft } : {}) };
  });
}

/** New recovery codes replace all old ones; needs a fresh second factor. */
export async function regenerateRecoveryCodes(ctx: ApplianceContext, actor: Actor, meta: RequestMeta): Promise<string[]> {
  requireRecentMfa(actor, ctx);
  return inScope(ctx.db.app, scopeForTenant(actor.tenantId), async (t) => {
    const user = await loadMfaUser(ctx, t, actor.userId);
    if (!user.mfa_secret) throw new Conflict("no authenticator is set up for this account");
    const codes = await storeRecoveryCodes(ctx, t, user);
    await recordAuthEvent(ctx, t, actor, { action: "auth.mfa.recovery_codes.regenerate", resourceType: "user", resourceId: user.id, outcome: "success" }, meta);
    return codes;
  });
}

/** Removes a user's authenticator and recovery codes (lost phone); their sessions end. Used by the users service. */
export async function clearMfa(ctx: ApplianceContext, t: Tx, userId: string): Promise<void> {
  await t.exec("UPDATE users SET mfa_secret = NULL, mfa_pending_secret = NULL, mfa_enrolled_at = NULL, mfa_last_step = NULL, updated_at = $2 WHERE id = $1", [
    userId,
    ctx.clock.now(),
  ]);
  await t.exec("DELETE FROM mfa_recovery_codes WHERE user_id = $1", [userId]);
}
