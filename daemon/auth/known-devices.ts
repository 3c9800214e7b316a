import type { ApplianceContext } from "../context.js";
import type { Tx } from "../db/sql.js";
import { randomToken, sha256 } from "./tokens.js";

/**
 * Device cookies (OWASP "Slow down online guessing attacks with device cookies"): a browser that
 * proved an account's password gets a random cookie, and the pair (SHA-256 of the cookie, account)
 * is remembered in PostgreSQL, so every replica recognises it. Behind a NAT or a proxy, a ward's
 * workstations and an attacker share one address; the cookie is what tells them apart. A
 * recognised browser skips the per-address limit and a lockout caused by others' guesses; its own
 * failures count against itself alone.
 */
export const DEVICE_COOKIE = "__Host-wardkeep_device";
const DEVICE_TOKEN = /^wkd_[A-Za-z0-9_-]{43}$/;

/** The hash of a well-formed device cookie, or null (absent or forged shapes are simply unknown). */
export function deviceHashOf(cookie: string | undefined): Buffer | null {
  return cookie && DEVICE_TOKEN.test(cookie) ? sha256(cookie) : null;
}

export function newDeviceToken(): string {
  return randomToken("wkd_");
}

/** `__Host-`, Secure, HttpOnly, SameSite=Strict like the session cookie; it outlives sessions by design. */
export function deviceCookie(ctx: ApplianceContext, token: string): string {
  return `${DEVICE_COOKIE}=${token}; Path=/; Secure; HttpOnly; SameSite=Strict; Max-Age=${ctx.config.auth.knownDeviceDays * 86_400}`;
}

export async function isKnownDevice(ctx: ApplianceContext, t: Tx, deviceHash: Buffer, userId: string): Promise<boolean> {
  const since = new Date(ctx.clock.now().getTime() - ctx.config.auth.knownDeviceDays * 86_400_000);
  const [row] = await t.rows<{ known: boolean }>("SELECT true AS known FROM auth_known_devices WHERE device_hash = $1 AND user_id = $2 AND last_success_at > $3", [
    deviceHash,
    userId,
    since,
  ]);
  return row?.known === true;
}

/** Remembers (or refreshes) the browser for the account and forgets the account's expired devices. */
export async function rememberDevice(ctx: ApplianceContext, t: Tx, deviceHash: Buffer, user: { id: string; tenantId: string | null }): Promise<void> {
  const now = ctx.clock.now();
  await t.exec(
    `INSERT INTO auth_known_devices (device_hash, user_id, tenant_id, last_success_at) VALUES ($1, $2, $3, $4)
     ON CONFLICT (device_hash, user_id) DO UPDATE SET last_success_at = EXCLUDED.last_success_at`,
    [deviceHash, user.id, user.tenantId, now],
  );
  await t.exec("DELETE FROM auth_known_devices WHERE user_id = $1 AND last_success_at <= $2", [user.id, new Date(now.getTime() - ctx.config.auth.knownDeviceDays * 86_400_000)]);
}
